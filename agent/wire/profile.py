"""Wire profiles: a field table and the pyiso8583 spec built from it, once.

The built-in :data:`CUP` profile is the table of DESIGN.md section 4. An acquirer that differs
gets a TOML file (``wire.profile``) whose rows override single keys of a field or add a field::

    name = "acquirer-x"
    [fields.60]
    max = 20
    [fields.22]
    justify = "right"
    [fields.43]                      # a field the built-in table lacks needs a whole row
    format = "ans"
    length = "fixed"
    max = 40
    name = "merchant name and location"

    [parameters]                     # terminal-parameter tags of 0800/360 (DESIGN.md section 16)
    25 = { length = 2, kind = "an" }

A ``[parameters]`` row gives a tag's length (1-99) and kind (``n`` digits, ``an`` text, ``b``
binary, ``gb2312`` text). This package knows no tag names: the rows are kept as plain data for
``agent.session.parameters``, which lays them over its built-in table when it decodes.

Every problem is a :class:`ProfileError` naming the file, the field or tag, and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent.wire.spec import CUP_FIELDS, FIXED, FORMATS, LENGTH_NAMES, LONGEST, FieldDef

CHARSETS = ("ascii", "gb2312", "gbk", "gb18030")
# Row keys that take one of a few words: the FieldDef attribute each sets, and the words with the
# value each stands for.
_CHOICES: dict[str, tuple[str, Mapping[str, Any]]] = {
    "format": ("fmt", {f: f for f in FORMATS}),
    "length": ("len_type", {name: value for value, name in LENGTH_NAMES.items()}),
    "justify": ("justify", {"left": "left", "right": "right"}),
    "charset": ("charset", {c: c for c in CHARSETS}),
}
_ROW_KEYS = ("name", "format", "length", "max", "justify", "charset")
_TOP_KEYS = ("name", "fields", "parameters")
MAC_FIELD = 64
PARAMETER_KINDS = ("n", "an", "b", "gb2312")
_PARAMETER_KEYS = ("length", "kind")
# tag -> (length, kind): what a profile's [parameters] table overrides
ParameterTable = Mapping[str, tuple[int, str]]


class ProfileError(ValueError):
    """A wire profile that cannot be used; the text names the file, field and key."""


@dataclass(frozen=True)
class Profile:
    """A field table, the pyiso8583 spec built from it, and the ``[parameters]`` rows."""

    name: str
    fields: Mapping[int, FieldDef]
    parameters: ParameterTable = field(default_factory=lambda: MappingProxyType({}))
    spec: dict[str, dict[str, Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", _pyiso8583_spec(self.fields))

    def with_overrides(self, rows: Mapping[int, Mapping[str, Any]], name: str) -> Profile:
        """A new profile: this one with ``rows`` (field -> key -> value) laid over it.

        Raises :class:`ProfileError` without the file name; :func:`load_profile` adds it.
        """
        table = dict(self.fields)
        for number, row in rows.items():
            table[number] = _overridden(table.get(number), number, row)
        return Profile(name, dict(sorted(table.items())), self.parameters)


def _pyiso8583_field(f: FieldDef) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "data_enc": "b" if f.fmt in ("n", "z", "b") else f.charset,
        "len_enc": "bcd",
        "len_type": f.len_type,
        "max_len": f.max_len,
        "len_count": "nibbles" if f.packed else "bytes",
        "desc": f.name,
    }
    if f.packed:
        # Left-justified digits leave the pad nibble at the end (right pad), and the reverse.
        spec["right_pad" if f.justify == "left" else "left_pad"] = "0"
    return spec


def _pyiso8583_spec(table: Mapping[int, FieldDef]) -> dict[str, dict[str, Any]]:
    spec: dict[str, dict[str, Any]] = {
        # TPDU and header are framed by agent.wire.frame, not by pyiso8583.
        "h": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 0, "desc": "header"},
        "t": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 2, "desc": "MTI"},
        "p": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 8, "desc": "bitmap"},
    }
    for number, f in table.items():
        spec[str(number)] = _pyiso8583_field(f)
    return spec


# ------------------------------------------------------------------------------- overrides


def _overridden(base: FieldDef | None, number: int, row: Mapping[str, Any]) -> FieldDef:
    def fail(key: str, reason: str) -> ProfileError:
        shown = f" = {row[key]!r}" if key in row else ""
        return ProfileError(f"field {number}: {key}{shown}: {reason}")

    if not isinstance(row, Mapping):
        raise ProfileError(f"field {number}: must be a table of keys ({', '.join(_ROW_KEYS)})")
    for key in row:
        if key not in _ROW_KEYS:
            raise fail(key, f"unknown key; expected one of {', '.join(_ROW_KEYS)}")
    if base is None:
        missing = [k for k in ("format", "length", "max") if k not in row]
        if missing:
            raise fail(
                missing[0], "the built-in profile has no such field, so its row needs "
                "format, length and max",
            )  # fmt: skip
        base = FieldDef(number, f"field {number}", "b", 1)
    if number == MAC_FIELD and any(k in row for k in ("format", "length", "max")):
        raise fail(next(k for k in ("format", "length", "max") if k in row), "field 64 is the "
                   "MAC and stays b8 (DESIGN.md section 4)")  # fmt: skip
    changes: dict[str, Any] = {}
    if "name" in row:
        if not isinstance(row["name"], str) or not row["name"].strip():
            raise fail("name", "expected a non-empty string")
        changes["name"] = row["name"]
    for key, (attribute, allowed) in _CHOICES.items():
        if key in row:
            if not isinstance(row[key], str) or row[key] not in allowed:
                raise fail(key, f"expected one of {', '.join(allowed)}")
            changes[attribute] = allowed[row[key]]
    if "max" in row:
        value = row["max"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail("max", "expected a whole number of 1 or more")
        changes["max_len"] = value
    result = replace(base, **changes)
    longest = LONGEST[result.len_type]
    if result.max_len > longest:
        key = "max" if "max" in row else "length"
        raise fail(key, f"a {LENGTH_NAMES[result.len_type]} field holds at most {longest}")
    if not result.packed:
        if "justify" in row:
            raise fail("justify", f"only n and z fields are justified; this one is {result.fmt}")
        result = replace(result, justify="")
    elif "justify" not in row and (not base.packed or {"fmt", "len_type"} & changes.keys()):
        # a field whose layout changed takes the default justification of its kind
        result = replace(result, justify="right" if result.len_type == FIXED else "left")
    if result.fmt not in ("an", "ans"):
        if "charset" in row:
            raise fail(
                "charset", f"only an and ans fields have a charset; this one is {result.fmt}"
            )
        result = replace(result, charset="ascii")
    return result


def _field_number(key: str) -> int:
    if not (key.isascii() and key.isdigit()) or not 2 <= int(key) <= 64:
        raise ProfileError(
            f"[fields.{key}]: unknown field; this profile has fields 2 to 64 "
            "(1 is the secondary bitmap, which CUP POS messages do not use)"
        )
    return int(key)


def _parameter_row(tag: str, row: Any) -> tuple[int, str]:
    """One ``[parameters]`` row checked: (length, kind)."""

    def fail(key: str, reason: str) -> ProfileError:
        return ProfileError(f"[parameters] tag {tag}: {key} = {row[key]!r}: {reason}")

    if not (len(tag) == 2 and tag.isascii() and tag.isdigit()):
        raise ProfileError(f'[parameters] tag {tag!r}: a tag is 2 digits, such as "25"')
    if not isinstance(row, Mapping):
        raise ProfileError(
            f"[parameters] tag {tag}: expected {{ length = N, kind = K }}, got {row!r}"
        )
    for key in row:
        if key not in _PARAMETER_KEYS:
            raise fail(key, "unknown key; expected length and kind")
    for key in _PARAMETER_KEYS:
        if key not in row:
            raise ProfileError(
                f"[parameters] tag {tag}: {key} is missing; a row gives length and kind"
            )
    length, kind = row["length"], row["kind"]
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 99:
        raise fail("length", "expected a whole number from 1 to 99")
    if not isinstance(kind, str) or kind not in PARAMETER_KINDS:
        raise fail("kind", f"expected one of {', '.join(PARAMETER_KINDS)}")
    return length, kind


def _parameter_overrides(rows: Any) -> ParameterTable:
    """The ``[parameters]`` table checked and frozen: tag -> (length, kind)."""
    if not isinstance(rows, Mapping):
        raise ProfileError("parameters: expected a table [parameters] of tag = { length, kind }")
    table = {str(tag): _parameter_row(str(tag), row) for tag, row in rows.items()}
    return MappingProxyType(dict(sorted(table.items())))


def profile_from_mapping(raw: Mapping[str, Any], default_name: str) -> Profile:
    """A profile from parsed TOML: the built-in one with the file's rows laid over it."""
    for key in raw:
        if key not in _TOP_KEYS:
            raise ProfileError(f"unknown key {key!r}; expected one of {', '.join(_TOP_KEYS)}")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise ProfileError(f"name = {name!r}: expected a non-empty string")
    rows = raw.get("fields", {})
    if not isinstance(rows, Mapping):
        raise ProfileError("fields: expected tables [fields.N]")
    profile = CUP.with_overrides({_field_number(str(k)): v for k, v in rows.items()}, name)
    return replace(profile, parameters=_parameter_overrides(raw.get("parameters", {})))


def load_profile(path: Path) -> Profile:
    """Read, validate and build the profile in ``path``."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such wire profile") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, a NUL in the path
        raise ProfileError(f"{path}: cannot be read: {exc}") from None
    try:
        return profile_from_mapping(raw, path.stem)
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from None


CUP = Profile("cup", {f.number: f for f in CUP_FIELDS})
"""The built-in profile: DESIGN.md section 4."""
