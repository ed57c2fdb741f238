"""How many terminal columns text takes: the self-check report lines up its names with it, and
the command line's progress line clears what it wrote."""

from __future__ import annotations


def columns(text: str) -> int:
    """Terminal columns of ``text``: a wide or full-width character (Chinese) takes two."""
    import unicodedata  # here: the service itself never measures text

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
