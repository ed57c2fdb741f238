"""Text from the broker as a technician's terminal may show it (DESIGN.md section 11): every
character that is not printable (C0 and C1 controls, ESC among them, bidi overrides, zero-width
marks, unassigned code points) becomes a visible escape, and the text is clipped. A terminal's
tid or cause is displayed, never obeyed: no title changed, screen cleared or line hidden."""

from __future__ import annotations

import math
from typing import Any

LIMIT = 200  # characters of one value on a line
CLIPPED = "..."  # ASCII: a GBK or ASCII console shows it too
DEPTH = 20  # levels of a JSON value shown before the rest is elided


def _escape(character: str) -> str:
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(value: object, limit: int = LIMIT) -> str:
    """``value`` as text with what is not printable escaped, at most ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    text = text[: limit + 1]  # escaping only lengthens: no need to look further
    escaped = "".join(c if c.isprintable() else _escape(c) for c in text)
    if len(escaped) <= limit:
        return escaped
    return escaped[: max(0, limit - len(CLIPPED))] + CLIPPED


def shown_json(value: Any, limit: int = LIMIT, depth: int = DEPTH) -> Any:
    """A JSON value with every string (keys included) passed through :func:`shown`, nesting
    beyond ``depth`` elided: safe to print as JSON on a terminal, whatever the broker sent."""
    if isinstance(value, str):
        return shown(value, limit)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):  # NaN and infinities are no JSON: shown as text
        return value if math.isfinite(value) else str(value)
    if depth <= 0:
        return CLIPPED
    if isinstance(value, dict):
        return {shown(k, limit): shown_json(v, limit, depth - 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shown_json(v, limit, depth - 1) for v in value]
    return shown(value, limit)
