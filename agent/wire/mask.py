"""Masking of cardholder and key data for every log line, journal row and printed field.

PANs keep at most their first 6 and last 4 digits, whatever a profile makes of field 2; track
data (1, 2 and 3), an extended PAN, PIN blocks, expiry dates and key material are removed; in IC
data (field 55) the tags that carry track, PAN, name or PIN data are removed or masked and the
rest is kept; in field 59 the SM4 PIN block (``A1``) is removed, the QR payment code (``A3``)
masked like a PAN and unknown usages removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from agent.wire import field59 as f59
from agent.wire.errors import DecodeError

if TYPE_CHECKING:  # message masks itself through this module: no import back at run time
    from agent.wire.message import FieldValue, Message

# Fields whose content is never shown, only that it was there and how long it was.
REMOVED = {
    14: "expiry",
    34: "extended PAN",
    35: "track 2",
    36: "track 3",
    45: "track 1",  # the cardholder's name with the PAN
    52: "PIN block",
    62: "key material",
}
# EMV tags in field 55 that carry cardholder secrets: track equivalents, PAN, names (5F20 and
# the extended 9F0B), expiry, PIN data, the cardholder's ID number (PBOC 9F61).
_SECRET_TAGS = {"56", "57", "5F20", "5F24", "99", "9F0B", "9F1F", "9F20", "9F61", "9F6B"}
_PAN_TAGS = {"5A"}
_SHOWN_DIGITS = 10  # 6 first + 4 last
_MIN_HIDDEN = 3  # below this a PAN is hidden whole: showing 6+4 would give away almost all of it


def mask_pan(pan: str) -> str:
    """``6217001234567890123`` -> ``621700*********0123``; short PANs are hidden whole."""
    if len(pan) < _SHOWN_DIGITS + _MIN_HIDDEN:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - _SHOWN_DIGITS) + pan[-4:]


def _removed(what: str, value: FieldValue) -> str:
    unit = "byte" if isinstance(value, bytes) else "character"
    return f"<{what} removed, {len(value)} {unit}{'' if len(value) == 1 else 's'}>"


def mask_field(number: int, value: FieldValue) -> str:
    """The printable, masked form of one field value."""
    if number in REMOVED:
        return _removed(REMOVED[number], value)
    if number == f59.FIELD:
        return mask_field59(value)
    if number == 2:  # text, or digits packed two to a byte (an acquirer's profile may say b)
        return mask_pan(value if isinstance(value, str) else value.hex().upper())
    if number == 55 and isinstance(value, bytes):
        return mask_icc(value)
    if isinstance(value, bytes):
        return value.hex().upper()
    return value


def masked_fields(message: Message) -> dict[int, str]:
    return {number: mask_field(number, value) for number, value in message.fields.items()}


# ------------------------------------------------------------------------------- field 55 (BER-TLV)


class _TlvError(ValueError):
    pass


def _read_tlv(data: bytes, pos: int) -> tuple[str, bool, bytes, int]:
    """One BER-TLV item at ``pos``: (tag hex, constructed, value, next position)."""
    start = pos
    if pos >= len(data):
        raise _TlvError("tag missing")
    first = data[pos]
    pos += 1
    if first & 0x1F == 0x1F:
        while True:
            if pos >= len(data):
                raise _TlvError("tag truncated")
            pos += 1
            if not data[pos - 1] & 0x80:
                break
    tag = data[start:pos].hex().upper()
    if pos >= len(data):
        raise _TlvError("length missing")
    length = data[pos]
    pos += 1
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 2 or pos + count > len(data):
            raise _TlvError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise _TlvError("value truncated")
    return tag, bool(first & 0x20), data[pos : pos + length], pos + length


def _tlv_items(data: bytes) -> Iterator[tuple[str, bool, bytes]]:
    """The BER-TLV items of ``data`` (its top level): tag hex, constructed, value."""
    pos = 0
    while pos < len(data):
        if data[pos] in (0x00, 0xFF):  # padding between objects
            pos += 1
            continue
        tag, constructed, value, pos = _read_tlv(data, pos)
        yield tag, constructed, value


def _mask_tlv(data: bytes) -> list[str]:
    items = []
    for tag, constructed, value in _tlv_items(data):
        if tag in _SECRET_TAGS:
            items.append(f"{tag}={_removed('secret', value)}")
        elif tag in _PAN_TAGS:
            items.append(f"{tag}={mask_pan(value.hex().upper().rstrip('F'))}")
        elif constructed:
            items.append(f"{tag}=[{' '.join(_mask_tlv(value))}]")
        else:
            items.append(f"{tag}={value.hex().upper()}")
    return items


def icc_free_of_card_data(data: bytes) -> bool:
    """Whether IC data (field 55) is valid TLV with none of the tags masking removes or masks,
    at any depth: a host's answer (issuer authentication data 91, scripts 71 and 72)."""
    try:
        return not any(
            tag in _SECRET_TAGS or tag in _PAN_TAGS
            or (constructed and not icc_free_of_card_data(value))
            for tag, constructed, value in _tlv_items(data)
        )  # fmt: skip
    except _TlvError:
        return False


def mask_icc(data: bytes) -> str:
    """Field 55 as ``TAG=value`` items with secret tags removed; not TLV at all -> removed whole."""
    try:
        return " ".join(_mask_tlv(data))
    except _TlvError:
        return _removed("IC data that is not valid TLV", data)


# ---------------------------------------------------------------------------- field 59 (usages)

# What may be shown of each usage is an allow-list: A2 (with the random factor masked) and A5 and
# the voucher A4; A3 as a PAN; A1 (PIN data, like field 52) and usages nobody defined are removed.
_SHOWN_USAGES = {f59.TUSN_USAGE, f59.QR_VOUCHER, f59.LOCATION}
_QUOTED = set(' []="\\')
_FACTOR_SHOWN = 4  # the PAN mask shows the last 4 digits too; the 2 before them it hides


def _token(text: str) -> str:
    """Text as one space-separated item: bare when unambiguous, else JSON-quoted."""
    if text and text.isprintable() and not _QUOTED & set(text) and not text.startswith("0x"):
        return text
    return json.dumps(text)


def _printable_ascii(value: bytes) -> str | None:
    return (
        value.decode("ascii") if value.isascii() and value.decode("ascii").isprintable() else None
    )


def _shown_bytes(value: bytes) -> str:
    """A value that may be shown: its text when printable ASCII, else ``0x`` and hex."""
    text = _printable_ascii(value)
    return _token(text) if text is not None else "0x" + value.hex().upper()


def mask_subusage(usage: str, tag: str, value: str) -> str:
    """One sub-usage value of ``A2`` or ``A5`` as it may be shown.

    The A2 random factor (03) is the last 6 digits of the PAN: only its last 4, which the PAN
    mask shows as well, are kept.
    """
    if usage == f59.TUSN_USAGE and tag == "03":
        hidden = max(len(value) - _FACTOR_SHOWN, 0)
        return "*" * hidden + value[hidden:] if hidden else "*" * len(value)
    return value


def mask_usage(tag: str, value: bytes) -> str:
    """One usage of field 59 as it may be shown (A2 and A5 as ``[01=... 02=...]``)."""
    if tag == f59.SM4_PIN_BLOCK:
        return _removed("PIN block", value)
    if tag == f59.QR_CODE:
        text = _printable_ascii(value)
        return _removed("QR payment code", value) if text is None else _token(mask_pan(text))
    if tag not in _SHOWN_USAGES:
        return _removed("unknown usage", value)
    if tag in f59.SUB_USAGE_NAMES:
        try:
            items = f59.parse_subusages(value, tag)
        except DecodeError:
            # A broken A2 may still hold the random factor; a broken A5 is only a location.
            if tag == f59.TUSN_USAGE:
                return _removed("A2 that does not parse", value)
            return _shown_bytes(value)
        shown = (f"{i.tag}={_token(mask_subusage(tag, i.tag, i.value))}" for i in items)
        return f"[{' '.join(shown)}]"
    return _shown_bytes(value)


def mask_field59(value: FieldValue) -> str:
    """Field 59 as ``TAG=value`` items; a field that is not a run of usages is removed whole,
    since it could hold an ``A1``."""
    try:
        usages = f59.Field59.parse(f59.field_bytes(value)).usages
    except DecodeError:
        return _removed("field 59 that does not parse as usages", value)
    return " ".join(f"{u.tag}={mask_usage(u.tag, u.value)}" for u in usages)
