"""Cases of the section 5 line itself, below the commands: a repeated SEQ is answered from the
module's last response, noise before STX is skipped and a damaged frame is NAKed. They need a
driver that lets the run put bytes on the line (:class:`RawLine`, as the serial driver does); a
driver reaching its module through an SDK has no such line, and the cases are skipped."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from drivers.conformance.case import Failed, Skipped, expect, hex_of
from drivers.framing import ACK, ETX, NAK, STX, Control, Event, Frame
from drivers.module import RESPONSE_BIT, CardModule, Command

ANSWER_WITHIN = 1.0  # seconds: as the serial driver's budget for PING and RTC
# RTC has a resolution of one second: a repeat sent later than that and answered with the same
# time was answered from the last response, not executed again.
REPEAT_AFTER = 1.1
# Noise before a frame: no STX among it, nor ACK or NAK, so that the module has nothing to do
# but skip it. A frame with a wrong CRC, by contrast, must be NAKed.
NOISE = bytes(byte for byte in range(0x80, 0x100, 7) if byte not in (STX, ETX, ACK, NAK))


@runtime_checkable
class RawLine(Protocol):
    """A driver that speaks the section 5 line itself and lets the run put bytes on it."""

    def new_seq(self) -> int: ...

    def raw_exchange(
        self, raw: bytes, *, timeout: float, until: Callable[[Event], bool]
    ) -> list[Event]: ...


def _line(module: CardModule) -> RawLine:
    if not isinstance(module, RawLine):
        raise Skipped(
            f"the driver ({type(module).__name__}) does not put frames on the section 5 line "
            "itself (an SDK does that), so the line is not the run's to test"
        )
    return module


def _answers(seq: int, command: Command) -> Callable[[Event], bool]:
    def answers(event: Event) -> bool:
        return isinstance(event, Frame) and event.seq == seq and event.cmd == command | RESPONSE_BIT

    return answers


def _response(events: list[Event], ask: Callable[[Event], bool]) -> Frame | None:
    return next((event for event in events if isinstance(event, Frame) and ask(event)), None)


def repeated_seq(module: CardModule) -> str:
    line = _line(module)
    seq = line.new_seq()
    request = Frame(seq, Command.RTC).encode()
    ask = _answers(seq, Command.RTC)
    said = _response(line.raw_exchange(request, timeout=ANSWER_WITHIN, until=ask), ask)
    if said is None:
        raise Failed(f"no RTC response to SEQ {seq} within {ANSWER_WITHIN} s")
    time.sleep(REPEAT_AFTER)
    resaid = _response(line.raw_exchange(request, timeout=ANSWER_WITHIN, until=ask), ask)
    if resaid is None:
        raise Failed(f"no response to RTC repeated with SEQ {seq} within {ANSWER_WITHIN} s")
    expect(
        resaid.data == said.data,
        f"RTC repeated with SEQ {seq} {REPEAT_AFTER} s later was answered {hex_of(resaid.data)} "
        f"after {hex_of(said.data)}: executed again, not answered from the last response",
    )
    return f"RTC repeated with SEQ {seq} {REPEAT_AFTER} s later: the same answer"


def noise_and_damage(module: CardModule) -> str:
    line = _line(module)
    seq = line.new_seq()
    ask = _answers(seq, Command.PING)
    events = line.raw_exchange(
        NOISE + Frame(seq, Command.PING).encode(), timeout=ANSWER_WITHIN, until=ask
    )
    expect(
        _response(events, ask) is not None,
        f"no PING response after {len(NOISE)} noise bytes before the frame: noise before STX is "
        "skipped (section 5)",
    )
    seq = line.new_seq()
    damaged = bytearray(Frame(seq, Command.PING).encode())
    damaged[-1] ^= 0xFF  # the CRC
    events = line.raw_exchange(
        bytes(damaged), timeout=ANSWER_WITHIN, until=lambda event: isinstance(event, Control)
    )
    controls = [event.byte for event in events if isinstance(event, Control)]
    expect(
        controls[:1] == [NAK],
        f"a PING with a wrong CRC was answered {'ACK' if controls[:1] == [ACK] else 'nothing'}; "
        "expected NAK (section 5)",
    )
    expect(not any(map(_answers(seq, Command.PING), events)), "a frame with a wrong CRC was run")
    return f"{len(NOISE)} noise bytes before a PING skipped; a wrong CRC NAKed"
