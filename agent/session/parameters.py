"""Terminal parameters of the CUP parameter download (0800/360, DESIGN.md section 16): field 62 of
the 0810 is a run of entries, each a 2-digit tag and a value whose length the tag fixes.

The lengths below are the ones the agent knows; an entry with a tag it does not know ends the
decoding there, and the rest is kept raw (hex) beside the decoded values rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.wire.errors import WireError


class ParameterError(WireError):
    """Field 62 of a parameter download that cannot be what the host meant."""


@dataclass(frozen=True)
class Tag:
    number: str
    name: str
    length: int
    kind: str  # "digits", "text" (ASCII, space padded), "gb2312", "hex"


# fmt: off
TAGS = {tag.number: tag for tag in (
    Tag("11", "application_type", 2, "digits"),
    Tag("12", "timeout_seconds", 2, "digits"),
    Tag("13", "retries", 1, "digits"),
    Tag("14", "transaction_phone_1", 14, "text"),
    Tag("15", "transaction_phone_2", 14, "text"),
    Tag("16", "transaction_phone_3", 14, "text"),
    Tag("17", "management_phone", 14, "text"),
    Tag("18", "tips_enabled", 1, "digits"),
    Tag("19", "tip_percent", 2, "digits"),
    Tag("20", "manual_entry", 1, "digits"),
    Tag("21", "auto_sign_off", 1, "digits"),
    Tag("22", "merchant_name", 40, "gb2312"),
    Tag("25", "master_key_index", 2, "digits"),
    Tag("26", "transactions_enabled", 8, "hex"),
)}
# The status upload (0820/362) uses the same form: the module and the software in use, then the
# terminal parameters in use as they were downloaded.
STATUS_TAGS = {tag.number: tag for tag in (
    Tag("51", "module_state", 1, "digits"),  # 0 ready, 1 tampered, 2 unreachable
    Tag("52", "module_serial", 16, "text"),
    Tag("53", "module_firmware", 16, "text"),
    Tag("54", "software_version", 16, "text"),
)}
# fmt: on


def _value(tag: Tag, raw: bytes) -> str:
    if tag.kind == "hex":
        return raw.hex().upper()
    try:
        text = raw.decode("gb18030" if tag.kind == "gb2312" else "ascii")
    except UnicodeDecodeError:
        encoding = "GB2312" if tag.kind == "gb2312" else "ASCII"
        raise ParameterError(f"tag {tag.number} ({tag.name}) is not {encoding} text") from None
    if tag.kind == "digits" and not text.isdigit():
        raise ParameterError(f"tag {tag.number} ({tag.name}) is {text!r}, not digits")
    return text.rstrip(" ") if tag.kind != "digits" else text


def decode(data: bytes) -> dict[str, Any]:
    """``{"values": {name: value}, "tags": {tag: hex}, "unparsed": hex or None}``."""
    values: dict[str, str] = {}
    tags: dict[str, str] = {}
    i = 0
    while i < len(data):
        number = data[i : i + 2].decode("ascii", "replace")
        tag = TAGS.get(number)
        if tag is None:
            break  # its length is unknown: what follows cannot be split, so it is kept whole
        raw = data[i + 2 : i + 2 + tag.length]
        if len(raw) < tag.length:
            raise ParameterError(
                f"tag {number} ({tag.name}) needs {tag.length} bytes, {len(raw)} are left"
            )
        values[tag.name] = _value(tag, raw)
        tags[number] = raw.hex().upper()
        i += 2 + tag.length
    return {"values": values, "tags": tags, "unparsed": data[i:].hex().upper() or None}


def encode(values: dict[str, str], table: dict[str, Tag] = TAGS) -> bytes:
    """Field 62 from decoded values (the host simulator's side, and the status upload)."""
    by_name = {tag.name: tag for tag in table.values()}
    out = b""
    for name, value in values.items():
        tag = by_name[name]
        if tag.kind == "hex":
            raw = bytes.fromhex(value)
        else:
            raw = value.encode("gb18030" if tag.kind == "gb2312" else "ascii").ljust(tag.length)
        if len(raw) != tag.length:
            raise ParameterError(f"{name} must be {tag.length} bytes, got {len(raw)}")
        out += tag.number.encode() + raw
    return out
