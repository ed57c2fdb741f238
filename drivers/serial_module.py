"""The card module over a serial line, on pyserial's ``serial_for_url``."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import serial

from drivers.framing import ACK, Event, Frame, FrameParser
from drivers.link import ACK_TIMEOUT, QUIET, RETRANSMITS, Link, LinkDown, LinkStats, NoAck
from drivers.module import (
    ENCRYPT_WITH_TDK,
    KEY_NUMBERS,
    PIN_BLOCK_BYTES,
    PIN_MARGIN,
    RESPONSE_BIT,
    CardModule,
    Command,
    KeyFamily,
    KeyStatus,
    MacAlgorithm,
    ModuleInfo,
    ModuleLinkError,
    ModuleProtocolError,
    ModuleSettings,
    ModuleStatusError,
    ModuleTimeout,
    Outcome,
    PinFormat,
    Status,
    TmkLoad,
    TusnAnswer,
    decode_info,
    decode_key_status,
    decode_rtc,
    decode_tusn_answer,
    encode_load_tmk,
    encode_pin_request,
    encode_tusn_request,
    mac_from_r,
)
from drivers.streams import SerialStream

# Total time a command may take, retransmissions and re-opening included.
DEFAULT_TIMEOUTS = {
    Command.PING: 1.0,
    Command.INFO: 1.0,
    Command.KEY_STATUS: 1.0,
    Command.RTC: 1.0,
    Command.LOAD_WORKING_KEYS: 3.0,
    Command.MAC: 1.5,
    Command.PIN_BLOCK: 1.0,  # to the module's ACK; the answer may take the keypad timeout
    Command.ENCRYPT: 1.5,
    Command.TUSN: 1.5,  # two SM4 blocks, as a MAC
    Command.LOAD_TMK: 3.0,  # as LOAD_WORKING_KEYS: a decryption and a state write
}
# The request goes out again (same SEQ: the module replays, never executes twice) when no
# response came this long after its ACK, e.g. because a noise byte looked like an ACK; or
# sooner, once the module's answer arrived damaged and the line then stayed silent past the
# module's own retransmission time (it gave the answer up after its 3 retransmissions).
RESEND_AFTER = 0.5
# The module retransmits a NAKed answer at once and an unacknowledged one after ACK_TIMEOUT
# (DESIGN.md section 5); silence this long after a NAK means it has stopped.
ANSWER_GIVEN_UP_AFTER = ACK_TIMEOUT + 0.05
# Rounds of a command (a request and its 3 retransmissions) the module may NAK whole before the
# line is taken for broken: noise may damage every copy of one round, rarely of three in a row;
# a module that NAKs every frame (a CRC it computes otherwise) is a link error, not a flood of
# new requests until the command's time is up.
NAKED_ROUNDS = 3
BUSY_RETRIES = 3
BUSY_BACKOFF = 0.05
REOPEN_INTERVAL = 0.1
# While a PIN entry waits for the cardholder, the line is polled in slices this short and left
# free between them, so another command waits at most one slice (DESIGN.md section 5).
PIN_POLL = 0.01
PIN_YIELD = 0.001


def _no_delay(port: serial.SerialBase) -> None:
    """Turn off Nagle on a socket:// port. The protocol writes single ACK bytes; with Nagle and
    delayed ACKs every MAC takes ~40 ms instead of ~0.2 ms. pyserial 3.5 has no public way to set
    it, so its socket attribute is used when present."""
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class _Started:
    """A command whose request went on the line (``request``; None when the line was closed or
    would not take it: then it starts over) and whose answer nobody has read yet."""

    command: Command
    data: bytes
    request: Frame | None
    finish: Callable[[bytes], bytes]  # the response DATA (status first) to the command's value
    outcome: Outcome[bytes]


class _Line:
    """``with module._line():`` the line's lock, and the answer of a command started beside its
    caller's work read first (:meth:`SerialCardModule._settle_started`). A class, not a
    generator: it is taken for every command (a generator context cost 2 us more each).

    The payment app's commands (``own`` False: what the module socket forwards) queue behind
    the agent's own (DESIGN.md section 5): one waits while an own command waits for the line,
    and gives the line back if one began waiting while it took it."""

    __slots__ = ("_module", "_own")

    def __init__(self, module: SerialCardModule, *, own: bool) -> None:
        self._module = module
        self._own = own

    def __enter__(self) -> None:
        module = self._module
        if self._own:
            if not module._lock.acquire(blocking=False):  # the line is busy: say it waits
                with module._turns:
                    module._own_waiting += 1
                module._lock.acquire()
                with module._turns:
                    module._own_waiting -= 1
                    if not module._own_waiting:
                        module._turns.notify_all()
        else:
            while True:
                with module._turns:
                    module._turns.wait_for(lambda: not module._own_waiting)
                module._lock.acquire()
                if not module._own_waiting:  # read without the condition: a stale 0 costs
                    break  # one own command the wait for this one, never a deadlock
                module._lock.release()
        try:
            module._settle_started()
        except BaseException:
            module._lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        self._module._lock.release()


class SerialCardModule(CardModule):
    """A card module behind ``url``: ``/dev/ttyS1``, a pty path, ``socket://host:port``...

    Thread-safe: one command at a time on the line, except that a PIN entry, once the module has
    acknowledged it, leaves the line to other commands while the cardholder types; its answer is
    picked up by whichever command reads the line. A device that disappears (USB unplug) is
    re-opened on the next command without restarting the process.
    """

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 115200,
        ack_timeout: float = ACK_TIMEOUT,
        retransmits: int = RETRANSMITS,
        timeouts: dict[Command, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.baudrate = baudrate
        self.ack_timeout = ack_timeout
        self.retransmits = retransmits
        self.timeouts = {**DEFAULT_TIMEOUTS, **(timeouts or {})}
        self.stats = LinkStats()
        self._clock = clock
        self._port: serial.SerialBase | None = None
        self._link: Link | None = None
        self._lock = threading.Lock()  # taken through _line()
        self._turns = threading.Condition()  # the app's commands wait here for the agent's
        self._own_waiting = 0  # the agent's own commands waiting for the line
        self._held = _Line(self, own=True)
        self._lent = _Line(self, own=False)  # to the payment app (forward)
        self._started: _Started | None = None  # see computing_mac
        self._pin_entries: set[int] = set()  # SEQs of PIN entries waiting for the keypad
        self._pin_answers: dict[int, Frame] = {}  # their answers, read by another command
        # A random first SEQ: a restarted agent must not hit the module's replay of its last SEQ.
        self._seq = os.urandom(1)[0]

    # ----------------------------------------------------------------------------- connection

    def _open(self) -> Link:
        # Exclusive access to a real device: two agents on one module would steal each other's
        # bytes. URLs like socket:// have no such lock.
        exclusive = {"exclusive": True} if "://" not in self.url else {}
        port = serial.serial_for_url(
            self.url, baudrate=self.baudrate, timeout=QUIET, write_timeout=1.0, **exclusive
        )
        port.reset_input_buffer()
        _no_delay(port)
        self._port = port
        self._link = Link(
            SerialStream(port),
            ack_timeout=self.ack_timeout,
            retransmits=self.retransmits,
            stats=self.stats,
            clock=self._clock,
        )
        return self._link

    def _connected(self, deadline: float) -> Link:
        while self._link is None:
            try:
                return self._open()
            except (serial.SerialException, OSError, ValueError) as exc:
                if self._clock() + REOPEN_INTERVAL >= deadline:
                    raise ModuleLinkError(
                        f"card module at {self.url} cannot be opened: {exc}"
                    ) from None
                time.sleep(REOPEN_INTERVAL)
        return self._link

    def _drop_port(self) -> None:
        port, self._port, self._link = self._port, None, None
        if port is not None:
            # pyserial 3.5's socket:// close() skips closing its socket when the shutdown before
            # it fails, as it does once the peer has gone: the descriptor would leak
            sock = getattr(port, "_socket", None)
            # a vanished device may fail to close; there is nothing left to release then
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()
            if isinstance(sock, socket.socket):
                sock.close()

    def close(self) -> None:
        with self._line():
            self._drop_port()

    def __enter__(self) -> SerialCardModule:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------- exchange

    def _line(self, own: bool = True) -> _Line:
        """The line to oneself, as a ``with`` statement's context (see :class:`_Line`); for the
        payment app's commands (``own`` False) once no command of the agent's waits."""
        return self._held if own else self._lent

    def _settle_started(self) -> None:
        """With the lock: a command started beside its caller's work (computing_mac) and not
        read yet is read now, its outcome kept for it: its caller may be held up (a frozen
        disk), and the line is never lent with an answer or an ACK still on it."""
        started, self._started = self._started, None
        if started is not None:
            started.outcome.settle(
                lambda: started.finish(
                    self._busy_retried(started.command, started.data, started.request)
                )
            )

    def _start(self, command: Command, data: bytes) -> Frame | None:
        """The first transmission of a new request, if the line is open and takes it."""
        link = self._link
        if link is None:
            return None
        request = Frame(self._next_seq(), command, data)
        try:
            link.transmit(request)
        except LinkDown:
            self._drop_port()
            return None
        return request

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _transact(self, command: Command, data: bytes, started: Frame | None = None) -> bytes:
        """One request/response with a fresh SEQ, or ``started``'s (its first transmission on
        the line already); returns the response DATA (status first)."""
        budget = self.timeouts[command]
        deadline = self._clock() + budget
        request = started or Frame(self._next_seq(), command, data)
        transmitted = started is not None

        is_response = self._response_to(request)
        lost: str | None = None
        naked = 0  # rounds NAKed whole
        replayed = False  # answered with another command's response
        while self._clock() < deadline:
            link = self._connected(deadline)
            try:
                try:
                    link.send(
                        request, answered=is_response, deadline=deadline, transmitted=transmitted
                    )
                finally:
                    transmitted = False  # what goes out again (a new port, a new SEQ) is sent
                wait = min(deadline - self._clock(), RESEND_AFTER)
                response = link.receive(
                    max(wait, 0.0), wanted=is_response, abandoned_after=ANSWER_GIVEN_UP_AFTER
                )
            except NoAck as exc:
                if self._clock() >= deadline:
                    break
                if exc.naks:
                    naked += 1
                    if naked < NAKED_ROUNDS:
                        # The module is there but a noisy line damaged every copy: the link has
                        # reported its error (DESIGN.md section 5); the command, with time left,
                        # goes again as a new request (new SEQ: all commands are idempotent).
                        request = Frame(self._next_seq(), command, data)
                        is_response = self._response_to(request)
                        continue
                    raise ModuleLinkError(
                        f"card module at {self.url} NAKed every copy of {command.name} in "
                        f"{naked} rounds of {exc.transmissions} transmissions: the line damages "
                        "every frame, or the module checks them otherwise"
                    ) from None
                raise ModuleLinkError(
                    f"card module at {self.url} did not acknowledge {command.name} "
                    f"(seq {request.seq}) after {exc.transmissions} transmissions"
                ) from None
            except LinkDown as exc:
                self._drop_port()
                lost = str(exc)
                continue
            if response is None:
                continue
            if response.cmd == request.cmd | RESPONSE_BIT:
                return response.data
            if replayed:
                raise ModuleProtocolError(
                    f"card module at {self.url} answered {command.name} (seq {request.seq}) with "
                    f"command 0x{response.cmd:02X}'s response, twice"
                )
            # our SEQ, another command's response: the module replayed its last response, to a
            # SEQ it saw last (a restarted agent's first may be the one before): a new request
            replayed = True
            request = Frame(self._next_seq(), command, data)
            is_response = self._response_to(request)
        if lost is not None:
            raise ModuleLinkError(
                f"card module at {self.url} went away during {command.name}: {lost}"
            )
        raise ModuleTimeout(
            f"card module at {self.url} sent no response to {command.name} within {budget:.1f} s"
        )

    def _response_to(self, request: Frame) -> Callable[[Frame], bool]:
        """Whether a received frame answers ``request``; the answer of a PIN entry waiting for
        the keypad is kept for it on the way."""

        def is_response(frame: Frame) -> bool:
            if frame.seq in self._pin_entries and frame.cmd == Command.PIN_BLOCK | RESPONSE_BIT:
                self._pin_answers[frame.seq] = frame
                return False
            # a response with our SEQ is ours, of whichever command (_transact tells a replay)
            return frame.seq == request.seq and frame.cmd & RESPONSE_BIT == RESPONSE_BIT

        return is_response

    def _checked(self, command: Command, payload: bytes) -> bytes:
        """DATA after the status byte; a non-zero status is a :class:`ModuleStatusError`."""
        if not payload:
            raise ModuleProtocolError(f"{command.name} response has no status byte")
        status = payload[0]
        if status != Status.OK:
            if command is Command.LOAD_TMK:
                key: str | None = "TMK"  # the only key LOAD_TMK checks: no key number needed
            else:
                key = KEY_NUMBERS.get(payload[1]) if len(payload) > 1 else None
            raise ModuleStatusError(command, status, key if status == Status.KCV_MISMATCH else None)
        return payload[1:]

    def _run(self, command: Command, data: bytes, *, own: bool = True) -> bytes:
        """The response DATA (status first), asking again while the module is busy; ``own``
        False for the payment app's commands, which wait for the agent's."""
        if command is Command.PIN_BLOCK:
            return self._pin_entry(data, own=own)
        with self._line(own):
            return self._busy_retried(command, data)

    def _busy_retried(self, command: Command, data: bytes, started: Frame | None = None) -> bytes:
        """:meth:`_transact`, asking again while the module is busy; on the line."""
        for attempt in range(BUSY_RETRIES + 1):
            payload = self._transact(command, data, started if attempt == 0 else None)
            if payload[:1] == bytes([Status.BUSY]) and attempt < BUSY_RETRIES:
                time.sleep(BUSY_BACKOFF * (attempt + 1))
                continue
            return payload
        raise AssertionError("unreachable: the last attempt returns")

    def _command(self, command: Command, data: bytes = b"") -> bytes:
        """Run ``command``; returns DATA after the status."""
        return self._checked(command, self._run(command, data))

    def _pin_entry(self, data: bytes, *, own: bool) -> bytes:
        """PIN_BLOCK: sent and acknowledged under the lock, then its answer awaited in short
        slices with the line free between them (a MAC must not wait for a cardholder)."""
        keypad = data[-1] if len(data) >= 2 else 0
        with self._line(own):
            request = Frame(self._next_seq(), Command.PIN_BLOCK, data)
            is_response = self._response_to(request)
            ack_by = self._clock() + self.timeouts[Command.PIN_BLOCK]
            link = self._connected(ack_by)
            try:
                link.send(request, answered=is_response, deadline=ack_by)
            except NoAck as exc:
                raise ModuleLinkError(
                    f"card module at {self.url} did not acknowledge PIN_BLOCK "
                    f"(seq {request.seq}) after {exc.transmissions} transmissions"
                ) from None
            except LinkDown as exc:
                self._drop_port()
                raise ModuleLinkError(f"card module at {self.url} went away: {exc}") from None
            self._pin_entries.add(request.seq)
            # the keypad's time runs from the module's ACK, not from the wait for the line
            deadline = self._clock() + keypad + PIN_MARGIN

        def answered(frame: Frame) -> bool:
            is_response(frame)  # keeps any PIN entry's answer, this one's included
            return request.seq in self._pin_answers

        try:
            while self._clock() < deadline:
                with self._line(own):
                    answer = self._pin_answers.pop(request.seq, None)
                    if answer is None:
                        if self._link is not link:
                            raise ModuleLinkError(
                                f"card module at {self.url} went away during the PIN entry"
                            )
                        try:
                            if link.receive(PIN_POLL, wanted=answered) is not None:
                                answer = self._pin_answers.pop(request.seq)
                        except LinkDown as exc:
                            self._drop_port()
                            raise ModuleLinkError(
                                f"card module at {self.url} went away during the PIN entry: {exc}"
                            ) from None
                if answer is not None:
                    return answer.data
                time.sleep(PIN_YIELD)  # another command waiting for the line takes it now
        finally:
            with self._line():
                self._pin_entries.discard(request.seq)
                self._pin_answers.pop(request.seq, None)
        raise ModuleTimeout(
            f"card module at {self.url} sent no PIN block within the keypad timeout "
            f"of {keypad} s and {PIN_MARGIN:g} s more"
        )

    # ------------------------------------------------------------------------------- commands

    def ping(self) -> int:
        data = self._command(Command.PING)
        if len(data) != 4:
            raise ModuleProtocolError(f"PING response carries {len(data)} data bytes, expected 4")
        return int.from_bytes(data, "big")

    def info(self) -> ModuleInfo:
        return decode_info(self._command(Command.INFO))

    def key_status(self, slot: int = 0) -> KeyStatus:
        return decode_key_status(slot, self._command(Command.KEY_STATUS, bytes([slot])))

    def rtc(self) -> datetime:
        return decode_rtc(self._command(Command.RTC))

    def load_working_keys(self, slot: int, layout: int, field62: bytes) -> None:
        self._command(Command.LOAD_WORKING_KEYS, bytes([slot, layout]) + field62)

    def load_tmk(self, slot: int, family: KeyFamily, ciphertext: bytes, kcv: bytes) -> None:
        self._command(Command.LOAD_TMK, encode_load_tmk(TmkLoad(slot, family, ciphertext, kcv)))

    def mac(self, slot: int, algorithm: MacAlgorithm, data: bytes) -> bytes:
        return self._mac_value(self._run(Command.MAC, bytes([slot, algorithm]) + data))

    def _mac_value(self, payload: bytes) -> bytes:
        mac = self._checked(Command.MAC, payload)
        if len(mac) != 8:
            raise ModuleProtocolError(f"MAC response carries {len(mac)} data bytes, expected 8")
        return mac

    @contextlib.contextmanager
    def computing_mac(self, r: bytes, slot: int = 0) -> Iterator[Outcome[bytes]]:
        """The MAC command goes on the line as the block begins and its answer is read as it
        ends, on the caller's thread; meanwhile the line is free: whoever takes it first reads
        the answer and keeps it here (see :meth:`_line`)."""
        data = bytes([slot, mac_from_r(r)]) + r
        outcome: Outcome[bytes] = Outcome()
        with self._line():
            request = self._start(Command.MAC, data)
            self._started = _Started(Command.MAC, data, request, self._mac_value, outcome)
        try:
            yield outcome
        finally:
            with self._line():  # reads the answer, unless another command has
                pass

    def pin_block(
        self, slot: int, pan12: str, timeout: int, *, format: PinFormat = PinFormat.ISO_FORMAT_0
    ) -> bytes:
        request = encode_pin_request(slot, pan12, timeout, format=format)
        block = self._command(Command.PIN_BLOCK, request)
        expected = PIN_BLOCK_BYTES[PinFormat(format)]
        if len(block) != expected:
            raise ModuleProtocolError(
                f"PIN_BLOCK response carries {len(block)} data bytes, expected {expected}"
            )
        return block

    def encrypt(self, slot: int, data: bytes) -> bytes:
        # 8 is all the driver can check: it does not know the slot's family, and an SM4 slot's
        # module answers BAD_PARAMETER to what is not a multiple of 16
        if not data or len(data) % 8:
            raise ValueError(f"ENCRYPT takes a multiple of 8 bytes, got {len(data)}")
        ciphertext = self._command(Command.ENCRYPT, bytes([slot, ENCRYPT_WITH_TDK]) + data)
        if len(ciphertext) != len(data):
            raise ModuleProtocolError(
                f"ENCRYPT response carries {len(ciphertext)} data bytes for {len(data)} sent"
            )
        return ciphertext

    def tusn(self, factor: str) -> TusnAnswer:
        return decode_tusn_answer(self._command(Command.TUSN, encode_tusn_request(factor)))

    def forward(self, command: Command, data: bytes) -> bytes:
        payload = self._run(command, data, own=False)
        if not payload:
            raise ModuleProtocolError(f"{command.name} response has no status byte")
        return payload

    # ------------------------------------------------------- the line, for a conformance run

    def new_seq(self) -> int:
        """A SEQ for a frame put on the line from outside (``agent module check``), taken from
        the driver's own sequence: its next request never repeats it, so the module never
        answers that request from the outsider's response."""
        with self._line():
            return self._next_seq()

    def raw_exchange(
        self, raw: bytes, *, timeout: float, until: Callable[[Event], bool]
    ) -> list[Event]:
        """Write ``raw`` on the line as it is (noise, a damaged frame, a repeated SEQ) and return
        what the module sends back, frames ACKed, until an event for which ``until`` is true or
        ``timeout`` seconds. Between the driver's own commands, which wait for it."""
        with self._line():
            deadline = self._clock() + timeout
            stream = self._connected(deadline).stream
            parser = FrameParser()
            seen: list[Event] = []
            try:
                stream.write(raw)
                while (remaining := deadline - self._clock()) > 0:
                    data = stream.read(min(remaining, QUIET))
                    for event in parser.feed(data) if data else parser.expire():
                        if isinstance(event, Frame):
                            stream.write(bytes([ACK]))
                        seen.append(event)
                        if until(event):
                            return seen
            except LinkDown as exc:
                self._drop_port()
                raise ModuleLinkError(f"card module at {self.url} went away: {exc}") from None
            return seen


def open_serial(settings: ModuleSettings) -> SerialCardModule:
    """The built-in driver (entry point ``serial`` of group ``pos_agent.modules``)."""
    return SerialCardModule(settings.url, baudrate=settings.baudrate)
