"""Framing of DESIGN.md section 4: 2-byte length, TPDU, 6-byte header, then the message.

Host frames carry all three; the payment app's local socket uses the length and the message only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from agent.wire.errors import DecodeError
from agent.wire.message import Message, decode_message
from agent.wire.profile import CUP, Profile

TPDU_ID = 0x60
TPDU_BYTES = 5
HEADER_BYTES = 6
LENGTH_BYTES = 2
MAX_FRAME = 0xFFFF

CATEGORY_MAGSTRIPE, CATEGORY_IC = 0x60, 0x61
# The header's processing requirement in a host response (DESIGN.md section 4): what the host
# asks for, and what the agent does about it.
PROCESSING_REQUIREMENTS: dict[int, tuple[str, str]] = {
    0: ("nothing", "-"),
    1: ("download terminal parameters", "0800/360 with the acquirer"),
    2: ("upload terminal status", "0820/362"),
    3: ("sign in again", "sign-in"),
    4: ("update CA public keys", "0820/372, 0800/370 per key, 0800/371"),
    5: ("download IC parameters", "0820/382, 0800/380 per AID, 0800/381"),
    6: ("TMS parameter download", "re-provision (TMS, else the provision hook)"),
    7: ("download the card BIN blacklist", "parameters-requested hook (acquirer-specific)"),
    8: ("download currency and fee rates", "parameters-requested hook (acquirer-specific)"),
    9: ("download contactless (non-PIN) parameters", "0800/394"),
}


class Layout(enum.Enum):
    """Which framing surrounds the message."""

    HOST = "host"  # length + TPDU + header + message (acquirer link)
    APP = "app"  # length + message (payment app socket)
    TPDU = "tpdu"  # TPDU + header + message (a capture without the length)
    BARE = "bare"  # message only (MTI onwards)

    @property
    def has_length(self) -> bool:
        return self in (Layout.HOST, Layout.APP)

    @property
    def has_tpdu(self) -> bool:
        return self in (Layout.HOST, Layout.TPDU)


@dataclass(frozen=True)
class Tpdu:
    """The 5-byte TPDU: the NIIs of the acquirer and of the terminal."""

    destination: int = 0x0003  # NII of the acquirer
    source: int = 0x0000  # NII of the terminal

    def swapped(self) -> Tpdu:
        """The TPDU of the response: source and destination exchanged."""
        return Tpdu(destination=self.source, source=self.destination)

    def to_bytes(self) -> bytes:
        return (
            bytes([TPDU_ID]) + self.destination.to_bytes(2, "big") + self.source.to_bytes(2, "big")
        )

    @classmethod
    def from_bytes(cls, data: bytes, offset: int = 0) -> Tpdu:
        if len(data) < TPDU_BYTES:
            raise DecodeError(
                f"frame ends after {len(data)} of 5 TPDU bytes", offset=offset, field="TPDU"
            )
        if data[0] != TPDU_ID:
            raise DecodeError(
                f"TPDU id is 0x{data[0]:02X}, expected 0x{TPDU_ID:02X}", offset=offset, field="TPDU"
            )
        return cls(
            destination=int.from_bytes(data[1:3], "big"), source=int.from_bytes(data[3:5], "big")
        )


@dataclass(frozen=True)
class Header:
    """The 6-byte header. The sub-version is sent as BCD (the configuration holds digits) and
    accepted as any 3 bytes from a host: real hosts put other values there."""

    software_version: int = 0x31
    terminal_status: int = 0  # 0 normal, 1 test
    processing_requirement: int = 0
    sub_version: bytes = bytes.fromhex("311303")
    category: int = CATEGORY_MAGSTRIPE  # 0x61 for IC applications

    def __post_init__(self) -> None:
        if not (0 <= self.terminal_status <= 15 and 0 <= self.processing_requirement <= 15):
            raise ValueError("terminal status and processing requirement are nibbles (0-15)")
        if not (isinstance(self.sub_version, bytes) and len(self.sub_version) == 3):
            raise ValueError("header sub-version is 3 bytes")
        if not (0 <= self.software_version <= 0xFF and 0 <= self.category <= 0xFF):
            raise ValueError("header category and software version are single bytes")

    @property
    def processing_requirement_text(self) -> str:
        known = PROCESSING_REQUIREMENTS.get(self.processing_requirement)
        return known[0] if known else "unknown"

    def with_processing_requirement(self, value: int) -> Header:
        return replace(self, processing_requirement=value)

    def to_bytes(self) -> bytes:
        status = (self.terminal_status << 4) | self.processing_requirement
        return bytes([self.category, self.software_version, status]) + self.sub_version

    @classmethod
    def from_bytes(cls, data: bytes, offset: int = 0) -> Header:
        if len(data) < HEADER_BYTES:
            raise DecodeError(
                f"frame ends after {len(data)} of 6 header bytes", offset=offset, field="header"
            )
        return cls(
            category=data[0],
            software_version=data[1],
            terminal_status=data[2] >> 4,
            processing_requirement=data[2] & 0x0F,
            sub_version=bytes(data[3:6]),
        )


@dataclass(frozen=True)
class Frame:
    """A message with what its layout framed it with (TPDU and header, or neither)."""

    layout: Layout
    message: Message
    tpdu: Tpdu | None = None
    header: Header | None = None


def with_length(payload: bytes) -> bytes:
    """Prefix ``payload`` with its 2-byte big-endian length."""
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame of {len(payload)} bytes exceeds the 2-byte length limit")
    return len(payload).to_bytes(LENGTH_BYTES, "big") + payload


def host_frame(message_bytes: bytes, tpdu: Tpdu, header: Header) -> bytes:
    """A complete frame for the acquirer link."""
    return with_length(tpdu.to_bytes() + header.to_bytes() + message_bytes)


def detect_layout(data: bytes) -> Layout:
    """Guess the framing from the bytes themselves.

    A 2-byte prefix that equals the remaining length is a length. A first byte of 0x00 is taken
    as a (wrong) length too: message class 0 is reserved, so no MTI starts with 00.
    A TPDU starts with 0x60, which no MTI does.
    """
    has_length = len(data) >= LENGTH_BYTES and (
        int.from_bytes(data[:LENGTH_BYTES], "big") == len(data) - LENGTH_BYTES or data[0] == 0x00
    )
    rest = data[LENGTH_BYTES:] if has_length else data
    has_tpdu = len(rest) > 0 and rest[0] == TPDU_ID
    if has_length:
        return Layout.HOST if has_tpdu else Layout.APP
    return Layout.TPDU if has_tpdu else Layout.BARE


def decode_frame(data: bytes, layout: Layout | None = None, profile: Profile = CUP) -> Frame:
    """Decode a frame of the given layout (detected when ``None``) under ``profile``.

    Raises :class:`DecodeError` with the offset counted from the first byte of ``data``.
    """
    data = bytes(data)
    layout = layout or detect_layout(data)
    offset = 0
    if layout.has_length:
        if len(data) < LENGTH_BYTES:
            raise DecodeError(
                f"frame ends after {len(data)} of 2 length bytes", offset=0, field="length"
            )
        declared = int.from_bytes(data[:LENGTH_BYTES], "big")
        actual = len(data) - LENGTH_BYTES
        if declared != actual:
            raise DecodeError(
                f"length prefix says {declared} bytes but {actual} follow", offset=0, field="length"
            )
        offset = LENGTH_BYTES
    tpdu = header = None
    if layout.has_tpdu:
        tpdu = Tpdu.from_bytes(data[offset : offset + TPDU_BYTES], offset)
        offset += TPDU_BYTES
        header = Header.from_bytes(data[offset : offset + HEADER_BYTES], offset)
        offset += HEADER_BYTES
    try:
        message = decode_message(data[offset:], profile)
    except DecodeError as exc:
        raise exc.shifted(offset) from None
    return Frame(layout=layout, message=message, tpdu=tpdu, header=header)
