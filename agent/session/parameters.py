"""Terminal parameters of the CUP parameter download (0800/360) and the status upload (0820/362),
DESIGN.md section 16: field 62 is a run of entries, each a 2-digit tag and a value whose length
and kind the tag fixes.

Acquirers differ in those lengths (one sends tag 25 as two hex characters, 26 as eight), and
nothing in the field says where a value ends: a length read wrong silently shifts everything
after it. So the built-in table below can be overridden per tag by the wire profile's
``[parameters]`` table, and decoding never guesses: from the first entry it cannot be sure of,
the rest of the field is kept raw with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.wire.profile import PARAMETER_KINDS, ParameterTable

_KIND_NAMES = dict(
    zip(PARAMETER_KINDS, ("digits", "ASCII text", "binary", "GB2312 text"), strict=True)
)


@dataclass(frozen=True)
class Tag:
    number: str
    name: str
    length: int
    kind: str  # one of PARAMETER_KINDS


# fmt: off
TAGS: Mapping[str, Tag] = {tag.number: tag for tag in (
    Tag("11", "application_type", 2, "n"),
    Tag("12", "timeout_seconds", 2, "n"),
    Tag("13", "retries", 1, "n"),
    Tag("14", "transaction_phone_1", 14, "an"),
    Tag("15", "transaction_phone_2", 14, "an"),
    Tag("16", "transaction_phone_3", 14, "an"),
    Tag("17", "management_phone", 14, "an"),
    Tag("18", "tips_enabled", 1, "n"),
    Tag("19", "tip_percent", 2, "n"),
    Tag("20", "manual_entry", 1, "n"),
    Tag("21", "auto_sign_off", 1, "n"),
    Tag("22", "merchant_name", 40, "gb2312"),
    Tag("23", "reversal_retries", 1, "n"),
    Tag("24", "offline_upload_mode", 1, "n"),
    Tag("25", "master_key_index", 1, "n"),
    Tag("26", "transactions_enabled", 4, "b"),
    Tag("27", "receipt_copies", 1, "n"),
    Tag("28", "mask_card_number", 1, "n"),
    Tag("29", "show_logo", 1, "n"),
    Tag("30", "quick_transaction_type", 2, "n"),
    Tag("51", "tag_51", 12, "an"),  # DESIGN.md names no meaning; it is sent back in 0820/362
)}
# The devices the status upload (0820/362) reports first, one digit each: 1 works, 0 not.
STATUS_DEVICES = (
    ("01", "keyboard"), ("02", "pin_pad"), ("03", "card_reader"), ("04", "printer"),
    ("05", "display"),
)
# fmt: on
LAST_STATUS_TAG = "51"  # the status upload sends it after the other parameters


def table(overrides: ParameterTable) -> dict[str, Tag]:
    """The built-in table with a wire profile's ``[parameters]`` (tag -> (length, kind)) laid
    over it; a tag the built-in table lacks gets the name ``tag_NN``."""
    result = dict(TAGS)
    for number, (length, kind) in overrides.items():
        name = TAGS[number].name if number in TAGS else f"tag_{number}"
        result[number] = Tag(number, name, length, kind)
    return result


def _value(tag: Tag, raw: bytes) -> str | None:
    """The value as the store keeps it, or None when ``raw`` is not of the tag's kind."""
    if tag.kind == "b":
        return raw.hex().upper()
    if tag.kind == "n":
        return raw.decode("ascii") if raw.isascii() and raw.isdigit() else None
    if tag.kind == "an":
        printable = all(0x20 <= byte <= 0x7E for byte in raw)
        return raw.decode("ascii").rstrip(" ") if printable else None
    try:  # GB18030 is a superset of GB2312: a merchant name with a GBK character still reads
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        return None
    return None if any(ord(c) < 0x20 for c in text) else text.rstrip(" ")


def _shown(raw: bytes) -> str:
    printable = all(0x20 <= byte <= 0x7E for byte in raw)
    return repr(raw.decode("ascii")) if printable else f"hex {raw.hex().upper()}"


def decode(data: bytes, overrides: ParameterTable | None = None) -> dict[str, Any]:
    """``{"values": {name: value}, "tags": {tag: raw hex}, "unparsed": hex or None,
    "reason": why decoding stopped, or None}``; never raises on what the host sent.

    Decoding stops at the first tag that is unknown, whose value is not of its kind, or that
    runs past the end. A stop at an unknown tag also keeps the entry before it raw: a value read
    with the wrong length always surfaces as garbage where the next tag should be, so that value
    cannot be trusted either (a host's ``251`` + ``26...`` read as 25 = ``12`` was exactly that).
    """
    tags_in_use = table(overrides or {})
    entries: list[tuple[Tag, int, bytes, str]] = []  # tag, offset, raw value, value
    reason = None
    i = 0
    while i < len(data):
        number_raw = data[i : i + 2]
        tag = tags_in_use.get(number_raw.decode("latin-1"))
        if tag is None:
            reason = f"unknown tag {_shown(number_raw)} at byte {i}"
            if entries:
                before, i, _, _ = entries.pop()
                reason += f"; tag {before.number} before it is kept raw too: its length is unsure"
            break
        raw = data[i + 2 : i + 2 + tag.length]
        if len(raw) < tag.length:
            reason = f"tag {tag.number} ({tag.name}) needs {tag.length} bytes, {len(raw)} are left"
            break
        value = _value(tag, raw)
        if value is None:
            reason = f"tag {tag.number} ({tag.name}) is {_shown(raw)}, not {_KIND_NAMES[tag.kind]}"
            break
        entries.append((tag, i, raw, value))
        i += 2 + tag.length
    return {
        "values": {tag.name: value for tag, _, _, value in entries},
        "tags": {tag.number: raw.hex().upper() for tag, _, raw, _ in entries},
        "unparsed": data[i:].hex().upper() or None,
        "reason": reason,
    }


def status_field(
    devices: Mapping[str, bool],
    downloaded: bytes,
    overrides: ParameterTable | None = None,
) -> bytes:
    """Field 62 of the status upload (0820/362): each of ``STATUS_DEVICES`` (name -> works),
    then the tags of the last terminal-parameter download (``downloaded``: its field 62, b""
    when there was none) as they decode under the table in use, ``51`` last if it came. What
    was kept raw is not sent: the host would read it with the lengths the agent could not."""
    out = b"".join(
        number.encode() + (b"1" if devices[name] else b"0") for number, name in STATUS_DEVICES
    )
    tags = decode(downloaded, overrides)["tags"]
    own = {number for number, _ in STATUS_DEVICES}  # a host echoing them: sent once, ours
    ordered = [n for n in tags if n not in own and n != LAST_STATUS_TAG]
    ordered += [LAST_STATUS_TAG] if LAST_STATUS_TAG in tags else []
    return out + b"".join(number.encode() + bytes.fromhex(tags[number]) for number in ordered)
