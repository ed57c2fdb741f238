"""ISO 8583 messages: MTI, bitmap and fields 2-64, encoded by pyiso8583 under a wire profile.

Field values are ``str`` for n, z, an and ans fields and ``bytes`` for b fields. A clear track
(z) uses ``=`` as the separator; a track encrypted under the TDK (53.3 = 1) may hold any nibble and
is carried as upper-case hex. TPDU, header and length prefix are handled by
:mod:`agent.wire.frame`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import iso8583

from agent.wire.errors import DecodeError, EncodeError
from agent.wire.profile import CUP, Profile
from agent.wire.spec import FIXED, FieldDef

FieldValue = str | bytes
MTI_BYTES, BITMAP_BYTES = 2, 8
DIGITS = "0123456789"
HEX_DIGITS = "0123456789ABCDEF"
SECURITY_CONTROL = 53
TRACK_ENCRYPTED_AT = 2  # 53.3, the track encryption flag, is the third digit of field 53


def _only(value: str, allowed: str) -> bool:
    return not value.strip(allowed)


@dataclass(frozen=True)
class Wire:
    """The fields of a decoded message as they came on the wire: each field's decoded value and
    its encoded bytes (length prefix and data), under ``profile``."""

    profile: Profile
    fields: Mapping[int, tuple[FieldValue, bytes]]

    def __repr__(self) -> str:
        # the bytes are card data (PAN, tracks, PIN block): only which fields, never what
        return f"Wire(profile={self.profile.name!r}, fields={sorted(self.fields)})"


@dataclass
class Message:
    """An ISO 8583 message: its MTI and its fields by number. ``wire``, for a message decoded
    here (and the messages made from it), lets :func:`encode_message` reuse the bytes of every
    field that still holds the value it was decoded to: the agent passes most fields on as they
    came, and encoding them again was most of the work of an answer to the app (issue 26)."""

    mti: str
    fields: dict[int, FieldValue] = field(default_factory=dict)
    wire: Wire | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        # Masked, so a message that reaches a log line or an exception never shows card data.
        from agent.wire.mask import masked_fields

        return f"Message(mti={self.mti!r}, fields={masked_fields(self)!r})"

    def __getitem__(self, number: int) -> FieldValue:
        return self.fields[number]

    def __contains__(self, number: object) -> bool:
        return number in self.fields

    def get(self, number: int, default: FieldValue | None = None) -> FieldValue | None:
        return self.fields.get(number, default)

    def text(self, number: int, default: str = "") -> str:
        """A text field's value, or ``default`` when the field is absent."""
        value = self.fields.get(number, default)
        if not isinstance(value, str):
            raise TypeError(f"field {number} is binary, not text")
        return value

    def binary(self, number: int) -> bytes:
        """A binary field's value; raises ``KeyError`` when absent."""
        value = self.fields[number]
        if not isinstance(value, bytes):
            raise TypeError(f"field {number} is text, not binary")
        return value


# ---------------------------------------------------------------------------------------- encode


def tracks_encrypted(fields: dict[int, FieldValue]) -> bool:
    """Whether 53.3 says the tracks are encrypted under the TDK."""
    control = fields.get(SECURITY_CONTROL)
    return isinstance(control, str) and control[TRACK_ENCRYPTED_AT : TRACK_ENCRYPTED_AT + 1] == "1"


def _check_value(f: FieldDef, value: FieldValue, encrypted: bool) -> str:
    """Validate one value and return it in pyiso8583's form (hex for packed/binary fields)."""
    if f.fmt == "b":
        if not isinstance(value, bytes | bytearray):
            raise EncodeError(f"expected bytes for a {f.kind} field", f.number)
        return bytes(value).hex()
    if not isinstance(value, str):
        raise EncodeError(f"expected text for a {f.kind} field", f.number)
    if f.fmt == "n":
        if not _only(value, DIGITS):
            raise EncodeError(f"{f.kind} takes digits only", f.number)
        return value
    if f.fmt == "z" and encrypted:
        if not _only(value, HEX_DIGITS):
            raise EncodeError(
                f"{f.kind} is encrypted (53.3 = 1) and takes upper-case hex digits only", f.number
            )
        return value
    if f.fmt == "z":
        if not _only(value, DIGITS + "="):
            raise EncodeError(f"{f.kind} takes digits and '=' only", f.number)
        return value.replace("=", "D")
    if not value.isprintable():
        raise EncodeError(f"{f.kind} takes printable characters only", f.number)
    if f.len_type == FIXED:
        # Fixed an/ans fields are left-justified and space-padded (DESIGN.md section 4), to a
        # length in bytes: a Chinese character takes two.
        try:
            size = len(value.encode(f.charset))
        except UnicodeEncodeError:
            raise EncodeError(
                f"{f.kind} holds text that {f.charset} cannot encode", f.number
            ) from None
        return value + " " * max(f.max_len - size, 0)
    return value


def encode_message(message: Message, profile: Profile = CUP) -> bytes:
    """Encode MTI, bitmap and fields; raises :class:`EncodeError` naming the field. A field that
    holds the value it was decoded to under ``profile`` (:class:`Wire`) goes out in the bytes it
    came in, validated when it was decoded: encoding it again would give them back."""
    mti = message.mti
    if not (len(mti) == 4 and _only(mti, DIGITS)):
        raise EncodeError("MTI must be 4 digits", "MTI")
    doc: dict[str, str] = {"t": mti}
    kept = _unchanged(message, profile)
    encrypted = tracks_encrypted(message.fields)
    for number, value in message.fields.items():
        if number in kept:
            continue
        f = profile.fields.get(number)
        if f is None:
            raise EncodeError(f"wire profile {profile.name!r} does not define the field", number)
        doc[str(number)] = _check_value(f, value, encrypted)
    try:
        encoded, parts = iso8583.encode(doc, profile.spec)
    except iso8583.EncodeError as exc:
        raise EncodeError(exc.msg, _field_number(exc.field)) from None
    if not kept:
        return bytes(encoded)
    fields = dict(kept)
    for key, part in parts.items():
        if key.isdigit():
            fields[int(key)] = part["len"] + part["data"]
    bitmap = 0
    for number in fields:
        bitmap |= 1 << (64 - number)
    return (
        parts["t"]["data"]
        + bitmap.to_bytes(BITMAP_BYTES, "big")
        + b"".join(fields[number] for number in sorted(fields))
    )


def _unchanged(message: Message, profile: Profile) -> dict[int, bytes]:
    """The encoded bytes of the fields of ``message`` that hold the value they were decoded to
    under ``profile``; none if field 53 changed (its 53.3 decides how the tracks are encoded)."""
    wire = message.wire
    if wire is None or wire.profile is not profile:
        return {}
    control = wire.fields.get(SECURITY_CONTROL)
    if message.fields.get(SECURITY_CONTROL) != (control[0] if control else None):
        return {}
    kept = {}
    for number, value in message.fields.items():
        decoded = wire.fields.get(number)
        if decoded is not None and decoded[0] == value:
            kept[number] = decoded[1]
    return kept


def _field_number(key: str) -> int | str:
    return int(key) if key.isdigit() else {"t": "MTI", "p": "bitmap"}.get(key, key)


# ---------------------------------------------------------------------------------------- decode


@functools.lru_cache(maxsize=256)
def present_fields(bitmap: bytes) -> tuple[int, ...]:
    """Field numbers whose bits are set in an 8-byte primary bitmap, in order. Kept for the
    bitmaps seen last: a terminal's messages come in a few shapes, and reading the 64 bits
    of each was a tenth of a decode (issue 26)."""
    return tuple(
        byte_index * 8 + bit + 1
        for byte_index, byte in enumerate(bitmap)
        for bit in range(8)
        if byte & (0x80 >> bit)
    )


_KEYS = {number: str(number) for number in range(1, 129)}  # pyiso8583's keys of the fields


def _check_structure(data: bytes, profile: Profile) -> None:
    if len(data) < MTI_BYTES:
        raise DecodeError(f"message ends after {len(data)} of 2 MTI bytes", offset=0, field="MTI")
    mti_hex = data[:MTI_BYTES].hex()
    if not _only(mti_hex, DIGITS):
        raise DecodeError(f"MTI bytes {mti_hex.upper()} are not BCD digits", offset=0, field="MTI")
    if len(data) < MTI_BYTES + BITMAP_BYTES:
        raise DecodeError(
            f"message ends after {len(data) - MTI_BYTES} of 8 bitmap bytes",
            offset=MTI_BYTES,
            field="bitmap",
        )
    for number in present_fields(data[MTI_BYTES : MTI_BYTES + BITMAP_BYTES]):
        if number == 1:
            raise DecodeError(
                "bit 1 (secondary bitmap) is set; this profile has fields 2-64 only",
                offset=MTI_BYTES,
                field="bitmap",
            )
        if number not in profile.fields:
            raise DecodeError(
                f"bitmap asks for field {number}, "
                f"which wire profile {profile.name!r} does not define",
                offset=MTI_BYTES + (number - 1) // 8,
                field="bitmap",
            )


def _convert(f: FieldDef, raw: str, offset: int, encrypted: bool) -> FieldValue:
    """Turn pyiso8583's decoded text into our value type, rejecting what the format forbids."""
    if f.fmt == "b":
        return bytes.fromhex(raw)
    if f.fmt == "n":
        if not _only(raw, DIGITS):
            raise DecodeError(f"{f.kind} holds a non-decimal nibble", offset=offset, field=f.number)
        return raw
    if f.fmt == "z" and encrypted:
        return raw  # ciphertext: any nibble, kept as hex
    if f.fmt == "z":
        if not _only(raw, DIGITS + "D"):
            raise DecodeError(
                f"{f.kind} holds a nibble other than 0-9 and D", offset=offset, field=f.number
            )
        return raw.replace("D", "=")
    if not raw.isprintable():
        raise DecodeError(
            f"{f.kind} holds a non-printable character", offset=offset, field=f.number
        )
    return raw


def decode_message(data: bytes, profile: Profile = CUP) -> Message:
    """Decode MTI onwards; any malformation raises :class:`DecodeError` with offset and field."""
    data = bytes(data)
    _check_structure(data, profile)
    try:
        doc_dec, doc_enc = iso8583.decode(data, profile.spec)
    except iso8583.DecodeError as exc:
        raise DecodeError(exc.msg, offset=exc.pos, field=_field_number(exc.field)) from None
    encrypted = tracks_encrypted({SECURITY_CONTROL: doc_dec.get(str(SECURITY_CONTROL), "")})
    fields: dict[int, FieldValue] = {}
    wire: dict[int, tuple[FieldValue, bytes]] = {}
    offset = MTI_BYTES + BITMAP_BYTES
    rows = profile.fields
    # the bitmap's fields, in order (_check_structure found each in the profile, bit 1 unset)
    for number in present_fields(data[MTI_BYTES : MTI_BYTES + BITMAP_BYTES]):
        key = _KEYS[number]
        value = _convert(rows[number], doc_dec[key], offset, encrypted)
        fields[number] = value
        raw = doc_enc[key]
        encoded = raw["len"] + raw["data"]
        wire[number] = (value, encoded)
        offset += len(encoded)
    return Message(doc_dec["t"], fields, Wire(profile, wire))
