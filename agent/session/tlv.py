"""BER-TLV as EMV and the CUP download messages use it (field 62 of 0800/370, 380, 394 and their
answers): a tag of one or more bytes, a length (short form, or 0x81/0x82 long form), the value.
Hostile input is refused with the offset and tag that went wrong, never read past its end."""

from __future__ import annotations

from agent.wire.errors import WireError


class TlvError(WireError):
    """TLV data that does not parse."""


def parse(data: bytes) -> list[tuple[str, bytes]]:
    """The (tag in upper-case hex, value) pairs of ``data`` in order. Zero bytes between
    objects are padding, as EMV allows (0xFF is not: the contactless tags begin with it)."""
    items: list[tuple[str, bytes]] = []
    i = 0
    while i < len(data):
        if data[i] == 0x00:
            i += 1
            continue
        start = i
        i += 1
        if data[start] & 0x1F == 0x1F:  # more tag bytes follow, each with b8 set but the last
            while i < len(data) and data[i] & 0x80:
                i += 1
            i += 1
            if i > len(data) or i - start > 4:
                raise TlvError(f"tag at offset {start} runs past the end or past 4 bytes")
        tag = data[start:i].hex().upper()
        if i >= len(data):
            raise TlvError(f"tag {tag} at offset {start} has no length")
        length = data[i]
        i += 1
        if length & 0x80:
            size = length & 0x7F
            if size not in (1, 2) or i + size > len(data):
                raise TlvError(f"tag {tag} at offset {start}: bad length form 0x{length:02X}")
            length = int.from_bytes(data[i : i + size], "big")
            i += size
        if i + length > len(data):
            raise TlvError(
                f"tag {tag} at offset {start} says {length} bytes, {len(data) - i} are left"
            )
        items.append((tag, data[i : i + length]))
        i += length
    return items


def encode(tag: str, value: bytes) -> bytes:
    """One TLV object (lengths up to 65,535)."""
    length = len(value)
    if length < 0x80:
        size = bytes([length])
    elif length <= 0xFF:
        size = bytes([0x81, length])
    elif length <= 0xFFFF:
        size = b"\x82" + length.to_bytes(2, "big")
    else:
        raise ValueError(f"a TLV value of {length} bytes is too long")
    return bytes.fromhex(tag) + size + value


def encode_all(items: list[tuple[str, bytes]]) -> bytes:
    return b"".join(encode(tag, value) for tag, value in items)
