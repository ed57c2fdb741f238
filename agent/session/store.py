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
# upload): a file of another shape is damaged, as one that is not JSON
_SHAPES: dict[str, tuple[str, type]] = {
    "terminal": ("values", dict),
    "status_upload": ("sent", str),
    "ca_keys": ("keys", list),
    "sm2_ca_keys": ("keys", list),
    "ic_parameters": ("aids", list),
    "contactless": ("tags", dict),
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
        for section, (key, kind) in _SHAPES.items():
            content = data.get(section)
            if content is None:
                continue
            held = content.get(key) if isinstance(content, dict) else None
            items_ok = kind is not list or all(isinstance(item, dict) for item in held or ())
            if not isinstance(held, kind) or not items_ok:
                raise ValueError(
                    f"downloaded parameters {self.path} are unreadable: section {section!r} "
                    f"has no {key!r} {'list of objects' if kind is list else kind.__name__}"
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
