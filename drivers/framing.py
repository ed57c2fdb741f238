"""Card-module serial framing (DESIGN.md section 5), with no I/O.

``STX | LEN (2, BE: bytes of SEQ+CMD+DATA) | SEQ | CMD | DATA | ETX | CRC (2, BE)`` where CRC is
CRC-16/CCITT-FALSE over LEN..ETX. Single-byte ``ACK``/``NAK`` acknowledge frames.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

STX, ETX, ACK, NAK = 0x02, 0x03, 0x06, 0x15
MAX_LEN = 1024
_HEAD = 3  # STX + LEN
_TAIL = 3  # ETX + CRC


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): ``binascii.crc_hqx`` with that init."""
    return binascii.crc_hqx(data, 0xFFFF)


@dataclass(frozen=True)
class Frame:
    """One frame of the serial protocol: its sequence number, command and data."""

    seq: int
    cmd: int
    data: bytes = b""

    def encode(self) -> bytes:
        length = 2 + len(self.data)
        if length > MAX_LEN:
            raise ValueError(f"frame body of {length} bytes exceeds LEN limit {MAX_LEN}")
        body = length.to_bytes(2, "big") + bytes([self.seq & 0xFF, self.cmd & 0xFF]) + self.data
        checked = body + bytes([ETX])
        return bytes([STX]) + checked + crc16(checked).to_bytes(2, "big")


@dataclass(frozen=True)
class BadFrame:
    """A frame that started with STX but was wrong; the receiver answers it with NAK."""

    reason: str


@dataclass(frozen=True)
class Control:
    """A lone ACK or NAK byte."""

    byte: int


Event = Frame | BadFrame | Control


class FrameParser:
    """Turns received bytes into frames, bad frames and ACK/NAK bytes.

    Noise before STX is skipped. A bad frame gives up only its STX, so a real frame hidden behind
    a corrupted one is still found. A partial frame waits for more bytes until :meth:`expire`.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.noise_bytes = 0

    @property
    def partial(self) -> bool:
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        while self._buffer:
            first = self._buffer[0]
            if first in (ACK, NAK):
                events.append(Control(first))
                del self._buffer[0]
                continue
            if first != STX:
                self.noise_bytes += 1
                del self._buffer[0]
                continue
            event = self._take_frame()
            if event is None:
                break  # wait for the rest of the frame
            events.append(event)
        return events

    def expire(self) -> list[Event]:
        """The line went quiet with a partial frame buffered: it will never complete.

        Its STX may have been noise in front of a real frame, so only that byte is dropped and the
        rest parsed again, until nothing partial is left.
        """
        if not self._buffer:
            return []
        events: list[Event] = [
            BadFrame(f"truncated frame: the line went quiet after {len(self._buffer)} bytes")
        ]
        while self._buffer:
            del self._buffer[0]
            events += self.feed(b"")
        return events

    def _take_frame(self) -> Event | None:
        buf = self._buffer
        if len(buf) < _HEAD:
            return None
        length = int.from_bytes(buf[1:3], "big")
        if length < 2 or length > MAX_LEN:
            del buf[0]
            return BadFrame(f"LEN {length} outside 2-{MAX_LEN}")
        total = _HEAD + length + _TAIL
        if len(buf) < total:
            return None
        if buf[total - 3] != ETX:
            bad = BadFrame(f"byte 0x{buf[total - 3]:02X} where ETX belongs")
            del buf[0]
            return bad
        received = int.from_bytes(buf[total - 2 : total], "big")
        computed = crc16(bytes(buf[1 : total - 2]))
        if received != computed:
            del buf[0]
            return BadFrame(f"CRC 0x{received:04X}, computed 0x{computed:04X}")
        frame = Frame(seq=buf[3], cmd=buf[4], data=bytes(buf[5 : total - 3]))
        del buf[:total]
        return frame
