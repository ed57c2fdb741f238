"""Downloaded parameters in the state directory (DESIGN.md section 16): one JSON file the payment
app's EMV kernel, ``agent params`` and the control socket read. Each download replaces its own
section, in one atomic write, only once its chain has completed."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from agent import damaged

log = logging.getLogger(__name__)

SECTIONS = (
    "terminal",
    "status_upload",
    "ca_keys",
    "sm2_ca_keys",
    "ic_parameters",
    "contactless",
)
# What each section holds that its readers rely on (agent params, the self-check, the status
# upload): (key, its type, what each item of a list holds, whether it must be there); a file
# of another shape is damaged, as one that is not JSON
_SHAPES: dict[str, tuple[str, type, tuple[str, ...], bool]] = {
    "terminal": ("values", dict, (), False),  # an older agent kept only "raw"
    "status_upload": ("sent", str, (), True),
    "ca_keys": ("keys", list, ("rid", "index"), True),
    "sm2_ca_keys": ("keys", list, ("rid", "index"), True),
    "ic_parameters": ("aids", list, ("aid", "tags"), True),
    "contactless": ("tags", dict, (), True),
}
MODE = 0o640  # the payment app (the service's group) reads it; nothing in it is secret


class ParameterStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        """Every section there is; ``{}`` before the first download. An unreadable file is an
        ``OSError`` or ``ValueError`` naming it."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"downloaded parameters {self.path} are unreadable: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"downloaded parameters {self.path} are not a JSON object")
        for section, shape in _SHAPES.items():
            content = data.get(section)
            if content is not None and (why := _misshapen(content, *shape)):
                raise ValueError(
                    f"downloaded parameters {self.path} are unreadable: section {section!r} {why}"
                )
        return data

    def in_use(self) -> dict[str, Any]:
        """:meth:`read` for the service: a damaged file is moved aside for a person (DESIGN.md
        section 8: set aside and reported, never a reason to stop) and counts as none."""
        try:
            return self.read()
        except ValueError as exc:
            aside = damaged.set_aside(self.path)
            log.error("%s: moved aside to %s", exc, aside)
            return {}

    def replace(self, section: str, content: dict[str, Any]) -> None:
        """Put ``content`` in as ``section`` (with the time), written atomically and durably."""
        if section not in SECTIONS:
            raise ValueError(f"unknown parameter section {section!r}")
        data = self.in_use()  # a damaged file is replaced by what just came
        data[section] = {"at": time.time(), **content}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, ensure_ascii=False, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)


def _misshapen(
    content: object, key: str, kind: type, item_keys: tuple[str, ...], required: bool
) -> str:
    """Why a section is not of its shape ("" when it is)."""
    absent = isinstance(content, dict) and key not in content and not required
    if not isinstance(content, dict) or not (absent or isinstance(content.get(key), kind)):
        return f"has no {key!r} {'list' if kind is list else kind.__name__}"
    if not isinstance(content.get("at", 0), int | float):
        return "has an 'at' that is not a time"
    for item in content.get(key, ()) if kind is list else ():
        if not isinstance(item, dict) or any(name not in item for name in item_keys):
            return f"has an item of {key!r} without {' and '.join(map(repr, item_keys))}"
    return ""


def expiry(value: object) -> str:
    """A stored CA key's DF05 as YYYYMMDD (the hex of 8 ASCII digits, or of 4 BCD bytes);
    "" when it is neither."""
    if not isinstance(value, str):
        return ""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return ""
    text = raw.decode("ascii", "replace") if len(raw) == 8 else raw.hex()
    return text if len(text) == 8 and text.isdigit() else ""
