"""How many terminal columns text takes: the self-check report lines up its names with it, and
the command line's progress line clears what it wrote; and which language the locale asks for."""

from __future__ import annotations

import os
from collections.abc import Mapping


def columns(text: str) -> int:
    """Terminal columns of ``text``: a wide or full-width character (Chinese) takes two."""
    import unicodedata  # here: the service itself never measures text

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def locale_language(environ: Mapping[str, str] = os.environ) -> str:
    """``zh`` when the locale asks for Chinese (the first of ``LC_ALL``, ``LC_MESSAGES`` and
    ``LANG`` that is set starts with ``zh``), else ``en``."""
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(variable, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"
