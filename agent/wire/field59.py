"""Field 59, custom data: a run of usages (DESIGN.md sections 4 and 17). Sans-IO.

A usage is a tag (an2: two ASCII letters or digits), a length (n3: three ASCII digits counting the
bytes of the value) and the value: ``A1`` SM4 PIN block, ``A2`` terminal hardware serial number,
``A3`` QR payment code, ``A4`` QR payment voucher, ``A5`` location. Unknown usages are kept and
forwarded. The values of ``A2`` and ``A5`` are runs of sub-usages: tag n2, length n3 (both ASCII
digits) and a printable ASCII value.

Parsing keeps every usage in order with its exact bytes, and a length is always three digits, so
``Field59.parse(data).to_bytes() == data`` for every ``data`` that parses. Offsets in errors count
from the first byte of field 59's value (sub-usages: from the first byte of their usage's value);
errors name usages by tag and never show a value: the field may hold a PIN block.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.wire.errors import DecodeError, EncodeError

if TYPE_CHECKING:  # message imports mask, which imports this module: no import back at run time
    from agent.wire.message import FieldValue, Message

FIELD = 59
MAX_BYTES = 999  # the row b..999 LLL of DESIGN.md section 4
TAG_BYTES = 2
LENGTH_DIGITS = 3
HEAD_BYTES = TAG_BYTES + LENGTH_DIGITS
LONGEST_VALUE = 10**LENGTH_DIGITS - 1  # what three length digits can say

SM4_PIN_BLOCK, TUSN_USAGE, QR_CODE, QR_VOUCHER, LOCATION = "A1", "A2", "A3", "A4", "A5"
USAGE_NAMES = {
    SM4_PIN_BLOCK: "SM4 PIN block",
    TUSN_USAGE: "terminal hardware serial number",
    QR_CODE: "QR payment code",
    QR_VOUCHER: "QR payment voucher",
    LOCATION: "location",
}
A2_NAMES = {
    "01": "device type",
    "02": "TUSN",
    "03": "random factor",
    "04": "ciphertext",
    "05": "application version",
}
A5_NAMES = {
    "01": "longitude",
    "02": "latitude",
    "03": "MCC",
    "04": "MNC",
    "05": "coordinate system",
    "06": "LAC",
    "07": "CID",
    "08": "signal",
    "15": "CDMA SID",
    "16": "CDMA NID",
    "17": "CDMA BID",
    "18": "CDMA signal",
}
SUB_USAGE_NAMES = {TUSN_USAGE: A2_NAMES, LOCATION: A5_NAMES}
# The words build_a5 takes besides the sub-usage numbers.
A5_KEYS = {
    "longitude": "01",
    "latitude": "02",
    "mcc": "03",
    "mnc": "04",
    "coordinate_system": "05",
    "lac": "06",
    "cid": "07",
    "signal": "08",
    "cdma_sid": "15",
    "cdma_nid": "16",
    "cdma_bid": "17",
    "cdma_signal": "18",
}
# A2 sub-usage 01 (DESIGN.md section 17); 07 is not assigned.
DEVICE_TYPES = {
    "01": "ATM",
    "02": "traditional POS",
    "03": "mPOS",
    "04": "smart POS",
    "05": "II-type phone",
    "06": "UnionPay QuickPass terminal",
    "08": "phone POS",
    "09": "face-pay terminal",
    "10": "barcode terminal",
    "11": "barcode helper",
    "12": "industry terminal",
    "13": "MIS",
}
A2_REQUIRED = ("01", "02", "03", "04")  # 05, the application version, is optional
TUSN_MAX = 50
MANUFACTURER_DIGITS, DEVICE_DIGITS = 6, 2  # a TUSN's head: CUP's number of the maker, the type
FACTOR_DIGITS = 6
CIPHERTEXT_CHARS = 8
APP_VERSION_CHARS = 8

# Spelt out rather than taken from the string module: Yocto packages that one apart
# (python3-stringold), and a terminal image should not need it for ten characters.
_DIGIT_TEXT = "0123456789"
_AN = frozenset((_DIGIT_TEXT + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz").encode())
_DIGITS = frozenset(_DIGIT_TEXT.encode())
_UPPER_HEX = frozenset("0123456789ABCDEF")
_HEX = frozenset(_DIGIT_TEXT + "abcdefABCDEF")


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _length(raw: bytes) -> int | None:
    """Three ASCII digits as a number; ``None`` when they are not."""
    if len(raw) != LENGTH_DIGITS or not set(raw) <= _DIGITS:
        return None
    return int(raw)


def _first_unprintable(raw: bytes) -> int | None:
    if raw.isascii() and raw.decode("ascii").isprintable():  # printable ASCII: 0x20-0x7E
        return None
    return next(i for i, byte in enumerate(raw) if not 0x20 <= byte <= 0x7E)


def _usage_label(usage_tag: str) -> str:
    return f"field 59 usage {usage_tag}"


# ---------------------------------------------------------------------------------------- usages


@dataclass(frozen=True)
class Usage:
    """One usage: its tag and the exact bytes of its value. ``repr`` shows only the length: the
    value of ``A1`` is a PIN block and ``A3`` a payment credential."""

    tag: str
    value: bytes

    def __post_init__(self) -> None:
        if not (len(self.tag) == TAG_BYTES and self.tag.isascii() and self.tag.isalnum()):
            raise EncodeError(f"usage tag {self.tag!r} is not 2 ASCII letters or digits", FIELD)
        if not isinstance(self.value, bytes):
            raise EncodeError(f"usage {self.tag}: the value must be bytes", FIELD)
        if len(self.value) > LONGEST_VALUE:
            raise EncodeError(
                f"usage {self.tag}: {len(self.value)} bytes of value, more than the "
                f"{LONGEST_VALUE} its 3-digit length can say",
                FIELD,
            )

    def __repr__(self) -> str:
        return f"Usage(tag={self.tag!r}, {_plural(len(self.value), 'byte')})"

    @property
    def name(self) -> str:
        return USAGE_NAMES.get(self.tag, "unknown usage")

    def to_bytes(self) -> bytes:
        return self.tag.encode("ascii") + f"{len(self.value):03d}".encode("ascii") + self.value


@dataclass(frozen=True)
class Field59:
    """Field 59 as its usages, in the order they came (or will go)."""

    usages: tuple[Usage, ...] = ()

    @classmethod
    def parse(cls, data: bytes | None) -> Field59:
        """The usages of ``data`` (``None`` or empty: none); :class:`DecodeError` when it is not a
        run of usages."""
        data = bytes(data or b"")
        if len(data) > MAX_BYTES:
            raise DecodeError(
                f"{len(data)} bytes, more than the {MAX_BYTES} the field holds",
                offset=MAX_BYTES,
                field=FIELD,
            )
        usages = []
        pos = 0
        while pos < len(data):
            left = len(data) - pos
            if left < HEAD_BYTES:
                raise DecodeError(
                    f"{_plural(left, 'byte')} left where a usage starts; one needs at least "
                    f"{HEAD_BYTES} (tag an2 + length n3)",
                    offset=pos,
                    field=FIELD,
                )
            raw_tag = data[pos : pos + TAG_BYTES]
            if not set(raw_tag) <= _AN:
                raise DecodeError(
                    "the tag of the usage here is not 2 ASCII letters or digits (an2)",
                    offset=pos,
                    field=FIELD,
                )
            tag = raw_tag.decode("ascii")
            length = _length(data[pos + TAG_BYTES : pos + HEAD_BYTES])
            if length is None:
                raise DecodeError(
                    f"usage {tag}: the length is not 3 ASCII digits (n3)",
                    offset=pos + TAG_BYTES,
                    field=FIELD,
                )
            start = pos + HEAD_BYTES
            if start + length > len(data):
                raise DecodeError(
                    f"usage {tag}: length {length:03d} runs past the end of the field "
                    f"({_plural(len(data) - start, 'byte')} left)",
                    offset=pos + TAG_BYTES,
                    field=FIELD,
                )
            usages.append(Usage(tag, data[start : start + length]))
            pos = start + length
        return cls(tuple(usages))

    def to_bytes(self) -> bytes:
        """The field's value; :class:`EncodeError` when it would not fit the field."""
        data = b"".join(u.to_bytes() for u in self.usages)
        if len(data) > MAX_BYTES:
            raise EncodeError(
                f"the usages {', '.join(self.tags)} take {len(data)} bytes, "
                f"more than the {MAX_BYTES} the field holds",
                FIELD,
            )
        return data

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(u.tag for u in self.usages)

    def find(self, tag: str) -> Usage | None:
        """The first usage with ``tag``."""
        return next((u for u in self.usages if u.tag == tag), None)

    def appended(self, tag: str, value: bytes) -> Field59:
        """This field with one more usage at the end (whatever usages it already has); raises
        :class:`EncodeError` when the result would not fit the field."""
        added = Usage(tag, value)
        size = sum(HEAD_BYTES + len(u.value) for u in self.usages) + HEAD_BYTES + len(value)
        if size > MAX_BYTES:
            raise EncodeError(
                f"adding usage {tag} ({_plural(len(value), 'byte')}) makes {size} bytes, "
                f"more than the {MAX_BYTES} the field holds",
                FIELD,
            )
        return Field59((*self.usages, added))


def find_usage(field59: bytes | None, tag: str) -> bytes | None:
    """The value of the first usage ``tag`` in a field 59 value; raises :class:`DecodeError`
    when the field does not parse."""
    found = Field59.parse(field59).find(tag)
    return None if found is None else found.value


def with_usage(field59: bytes | None, tag: str, value: bytes) -> bytes:
    """``field59`` (``None``: absent) with usage ``tag`` appended after what it holds, unchanged.

    Raises :class:`DecodeError` when ``field59`` does not parse (the new usage would be read as
    part of the broken one) and :class:`EncodeError` when the result does not fit the field.
    """
    return Field59.parse(field59).appended(tag, value).to_bytes()


def without_pin(field59: bytes) -> bytes | None:
    """``field59`` without its ``A1`` (the SM4 PIN block, never kept anywhere); None when
    nothing else is left or the field does not parse (then nothing of it is kept)."""
    try:
        parsed = Field59.parse(field59)
    except DecodeError:
        return None
    kept = Field59(tuple(u for u in parsed.usages if u.tag != SM4_PIN_BLOCK))
    return kept.to_bytes() if kept.usages else None


def for_replay(field59: bytes) -> bytes | None:
    """What of an answer's ``field59`` a repetition gets again (the journal keeps it): the QR
    voucher (A4) and the location (A5). Never the PIN block (A1), the TUSN with its random
    factor (A2: the PAN's last 6 digits), the QR payment code (A3) or a usage nobody defined;
    None when nothing is left or the field does not parse."""
    try:
        parsed = Field59.parse(field59)
    except DecodeError:
        return None
    kept = Field59(tuple(u for u in parsed.usages if u.tag in (QR_VOUCHER, LOCATION)))
    return kept.to_bytes() if kept.usages else None


def field_bytes(value: FieldValue) -> bytes:
    """Field 59 as bytes: ``bytes`` under the built-in profile; an acquirer profile that makes it
    text gets its ASCII bytes (:class:`DecodeError` for text that is not ASCII)."""
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("ascii")
    except UnicodeEncodeError as exc:
        raise DecodeError(
            "text that is not ASCII, not usages", offset=exc.start, field=FIELD
        ) from None


def has_a2(message: Message) -> bool:
    """Whether ``message`` carries field 59 with an ``A2`` usage.

    Raises :class:`DecodeError` when field 59 is there but does not parse: whether it holds an
    ``A2`` cannot be told, and that is a different finding from "none".
    """
    value = message.fields.get(FIELD)
    if value is None:
        return False
    return Field59.parse(field_bytes(value)).find(TUSN_USAGE) is not None


# ------------------------------------------------------------------------------------ sub-usages


@dataclass(frozen=True)
class SubUsage:
    """One sub-usage of ``A2`` or ``A5``: a 2-digit tag and its printable ASCII value."""

    tag: str
    value: str

    def to_bytes(self) -> bytes:
        raw = self.value.encode("ascii")
        return self.tag.encode("ascii") + f"{len(raw):03d}".encode("ascii") + raw


def parse_subusages(value: bytes, usage_tag: str) -> tuple[SubUsage, ...]:
    """The sub-usages of the value of usage ``usage_tag`` (``A2``, ``A5``) in order;
    :class:`DecodeError` with the offset in that value when it is not a run of sub-usages."""
    label = _usage_label(usage_tag)
    items = []
    pos = 0
    while pos < len(value):
        left = len(value) - pos
        if left < HEAD_BYTES:
            raise DecodeError(
                f"{_plural(left, 'byte')} left where a sub-usage starts; one needs at least "
                f"{HEAD_BYTES} (tag n2 + length n3)",
                offset=pos,
                field=label,
            )
        raw_tag = value[pos : pos + TAG_BYTES]
        if not set(raw_tag) <= _DIGITS:
            raise DecodeError(
                "the tag of the sub-usage here is not 2 digits (n2)", offset=pos, field=label
            )
        tag = raw_tag.decode("ascii")
        length = _length(value[pos + TAG_BYTES : pos + HEAD_BYTES])
        if length is None:
            raise DecodeError(
                f"sub-usage {tag}: the length is not 3 ASCII digits (n3)",
                offset=pos + TAG_BYTES,
                field=label,
            )
        start = pos + HEAD_BYTES
        if start + length > len(value):
            raise DecodeError(
                f"sub-usage {tag}: length {length:03d} runs past the end of {usage_tag} "
                f"({_plural(len(value) - start, 'byte')} left)",
                offset=pos + TAG_BYTES,
                field=label,
            )
        raw = value[start : start + length]
        bad = _first_unprintable(raw)
        if bad is not None:
            raise DecodeError(
                f"sub-usage {tag}: the value holds a byte that is not printable ASCII",
                offset=start + bad,
                field=label,
            )
        items.append(SubUsage(tag, raw.decode("ascii")))
        pos = start + length
    return tuple(items)


def sub_usages(value: bytes, usage_tag: str = TUSN_USAGE) -> dict[str, str]:
    """The sub-usages of an ``A2`` (or ``usage_tag``) value by tag, the first of each tag;
    :class:`DecodeError` as :func:`parse_subusages`."""
    found: dict[str, str] = {}
    for item in parse_subusages(value, usage_tag):
        found.setdefault(item.tag, item.value)
    return found


def build_subusages(items: Iterable[tuple[str, str]], usage_tag: str) -> bytes:
    """The value of usage ``usage_tag`` from (tag, value) pairs, in the order given."""
    label = _usage_label(usage_tag)
    parts = []
    for tag, text in items:
        if not (len(tag) == TAG_BYTES and tag.isascii() and tag.isdigit()):
            raise EncodeError(f"sub-usage tag {tag!r} is not 2 digits", label)
        if not isinstance(text, str):
            raise EncodeError(f"sub-usage {tag}: the value must be text", label)
        if not (text.isascii() and text.isprintable()):
            raise EncodeError(f"sub-usage {tag}: the value is not printable ASCII", label)
        if len(text) > LONGEST_VALUE:
            raise EncodeError(
                f"sub-usage {tag}: {len(text)} characters, more than the {LONGEST_VALUE} its "
                "3-digit length can say",
                label,
            )
        parts.append(SubUsage(tag, text).to_bytes())
    return b"".join(parts)


# -------------------------------------------------------------------------------------------- A2


def _sub(tag: str) -> str:
    return f"A2 sub-usage {tag} ({A2_NAMES[tag]})"


def tusn_layout_problem(tusn: str, device_type: str | None, device_named: str) -> str | None:
    """What is wrong with a TUSN's layout (DESIGN.md section 17): the 6-digit manufacturer
    number CUP assigned, the 2-digit device type (``device_type``, where known; whose it is:
    ``device_named``), then the serial."""
    head = MANUFACTURER_DIGITS + DEVICE_DIGITS
    if len(tusn) <= head or not tusn[:head].isdigit():
        return f"TUSN {tusn!r} does not begin with 6 manufacturer and 2 device-type digits"
    named = tusn[MANUFACTURER_DIGITS:head]
    if device_type is not None and named != device_type:
        return f"TUSN {tusn} names device type {named}, {device_named} {device_type}"
    return None


def _value_problems(
    values: Mapping[str, str], card_factor: str | None, tusn_layout: bool
) -> list[str]:
    """What is wrong with the values of a parsed A2 (``card_factor``: the random factor the
    request's card gives, when known; ``tusn_layout``: whether the TUSN's layout is checked).
    The random factor is never quoted: it is six PAN digits, two of them ones the PAN mask
    hides."""
    problems = []
    device = values.get("01")
    if device is not None:
        if not (len(device) == 2 and device.isdigit()):
            problems.append(f"{_sub('01')} {device!r} is not 2 digits")
        elif device not in DEVICE_TYPES:
            problems.append(f"{_sub('01')} {device} is not a CUP device type (01-06, 08-13)")
    tusn = values.get("02")
    if tusn is not None:
        if not tusn:
            problems.append(f"{_sub('02')} is empty")
        elif len(tusn) > TUSN_MAX:
            problems.append(f"{_sub('02')} has {len(tusn)} characters, more than {TUSN_MAX}")
        elif tusn_layout:
            known = device if device in DEVICE_TYPES else None
            if layout := tusn_layout_problem(tusn, known, "sub-usage 01 says"):
                problems.append(f"A2 {layout}")
    factor = values.get("03")
    if factor is not None:
        if len(factor) != FACTOR_DIGITS:
            problems.append(
                f"{_sub('03')} has {_plural(len(factor), 'character')}, "
                f"expected {FACTOR_DIGITS} digits"
            )
        elif not factor.isdigit():
            problems.append(f"{_sub('03')} is not all digits")
        elif card_factor is not None and factor != card_factor:
            problems.append(f"{_sub('03')} is not the card's: the last {FACTOR_DIGITS} PAN digits")
    cipher = values.get("04")
    if cipher is not None:
        if len(cipher) != CIPHERTEXT_CHARS:
            problems.append(
                f"{_sub('04')} has {_plural(len(cipher), 'character')}, "
                f"expected {CIPHERTEXT_CHARS} upper-case hex digits"
            )
        elif set(cipher) <= _UPPER_HEX:
            pass
        elif set(cipher) <= _HEX:
            # Acquirers compare the hex string as text: d60af15d is not D60AF15D to them.
            problems.append(
                f"{_sub('04')} {cipher} has lower-case hex digits; acquirers compare the "
                "upper-case string"
            )
        else:
            problems.append(f"{_sub('04')} {cipher!r} is not {CIPHERTEXT_CHARS} hex digits")
    version = values.get("05")
    if version is not None and len(version) != APP_VERSION_CHARS:
        problems.append(
            f"{_sub('05')} has {_plural(len(version), 'character')}, expected "
            f"{APP_VERSION_CHARS} (space-padded)"
        )
    return problems


def a2_problem(
    value: bytes, card_factor: str | None = None, tusn_layout: bool = True
) -> str | None:
    """What is wrong with the value of an ``A2`` usage, every problem found, ``; ``-separated;
    ``None`` when it is well-formed (DESIGN.md section 17). ``card_factor``: the random factor
    of the request's card (the last 6 digits of its PAN or payment code), when it is known.

    Well-formed: sub-usages 01-04 present once each, 05 at most once; 01 a device type of two
    digits; 02 the TUSN, up to 50 printable characters: 6 manufacturer digits, the device type
    of 01, then the serial; 03 exactly 6 digits, the card's factor when known (a host that
    checks the ciphertext refuses any other); 04 exactly 8 upper-case hex digits (lower-case is
    a problem: acquirers compare the string); 05 exactly 8 characters (an8, space-padded).
    Order and sub-usages other than 01-05 are not checked: hosts look sub-usages up by tag.
    ``tusn_layout`` False: the TUSN is taken as it is (the module's: what was reported to CUP).
    """
    try:
        items = parse_subusages(value, TUSN_USAGE)
    except DecodeError as exc:
        return f"A2 at byte {exc.offset}: {exc.reason}"
    problems = []
    values: dict[str, str] = {}
    for item in items:
        if item.tag in values and item.tag in A2_NAMES:
            twice = f"{_sub(item.tag)} is there more than once"
            if twice not in problems:
                problems.append(twice)
        values.setdefault(item.tag, item.value)
    missing = [f"{tag} ({A2_NAMES[tag]})" for tag in A2_REQUIRED if tag not in values]
    if missing:
        problems.append(f"A2 has no sub-usage {', '.join(missing)}")
    problems.extend(_value_problems(values, card_factor, tusn_layout))
    return "; ".join(problems) or None


def build_a2(device_type: str, tusn: str, factor: str, ciphertext: str, app_version: str) -> bytes:
    """The value of an ``A2`` usage with all five sub-usages in order 01-05; the application
    version is clipped or space-padded to 8 characters. Raises :class:`EncodeError` with
    :func:`a2_problem`'s text when the result would not be well-formed: an A2 the agent builds
    must never be the reason for a refusal. The module's TUSN goes as it is, whatever its
    layout: it is what was reported (the self-check names a layout problem)."""
    version = app_version[:APP_VERSION_CHARS].ljust(APP_VERSION_CHARS)
    value = build_subusages(
        [("01", device_type), ("02", tusn), ("03", factor), ("04", ciphertext), ("05", version)],
        TUSN_USAGE,
    )
    problem = a2_problem(value, tusn_layout=False)
    if problem is not None:
        raise EncodeError(problem, _usage_label(TUSN_USAGE))
    return value


# -------------------------------------------------------------------------------------------- A5


def build_a5(location: Mapping[str, str]) -> bytes:
    """The value of an ``A5`` usage from sub-usage names (``longitude``, ``latitude``,
    ``coordinate_system``, ``mcc``, ``mnc``, ``lac``, ``cid``, ``signal``, ``cdma_sid``,
    ``cdma_nid``, ``cdma_bid``, ``cdma_signal``) or numbers (``01``-``08``, ``15``-``18``) to
    text values, in the order given."""
    label = _usage_label(LOCATION)
    if not location:
        raise EncodeError("no location sub-usages given", label)
    items: list[tuple[str, str]] = []
    given: dict[str, str] = {}
    for key, value in location.items():
        tag = A5_KEYS.get(key, key if key in A5_NAMES else None)
        if tag is None:
            raise EncodeError(
                f"unknown location sub-usage {key!r}; expected one of "
                f"{', '.join(A5_KEYS)} or {', '.join(A5_NAMES)}",
                label,
            )
        if tag in given:
            raise EncodeError(
                f"sub-usage {tag} ({A5_NAMES[tag]}) given twice, as {given[tag]!r} and {key!r}",
                label,
            )
        given[tag] = key
        items.append((tag, value))
    return build_subusages(items, LOCATION)
