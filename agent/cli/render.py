"""How the command line writes to a technician's terminal (DESIGN.md section 11): readable on
any encoding (a GBK or ASCII console gets no traceback: what it cannot show is replaced, and
Chinese is left out where an English line says the same), colour only on a terminal and without
``NO_COLOR``, and a progress line on stderr for work that takes longer than a second."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TextIO

from agent.display import columns, locale_language

CHINESE_SAMPLE = "终端未登记"


def prepare_streams() -> None:
    """What the console cannot encode becomes ``?`` instead of a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")


def encodes(text: str, stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stdout) can show ``text``: GBK and UTF-8 show Chinese, only UTF-8
    shows ✓ and ✗, ASCII and Latin-1 neither."""
    encoding = getattr(stream or sys.stdout, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def shows_chinese(stream: TextIO | None = None) -> bool:
    return encodes(CHINESE_SAMPLE, stream)


def help_language() -> str:
    """The language of ``--help``: the locale's where the console can show Chinese, else English.
    Cheap (the service builds the parser at every start): the environment and stdout's encoding,
    no import."""
    return locale_language() if shows_chinese() else "en"


def language(asked: str | None, *, shown: bool = True) -> str:
    """One language per run: ``asked`` (``--lang``), else the locale's where the console can
    show Chinese, else English. Text ``shown`` on a console that cannot show Chinese is
    English even when Chinese is asked for (it would be question marks); JSON carries any
    language in its escapes."""
    if asked == "zh" and shown and not shows_chinese():
        return "en"
    return asked or help_language()


def colour_wanted(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Colour only on a terminal, without NO_COLOR (https://no-color.org) and not for a dumb
    terminal."""
    isatty = getattr(stream, "isatty", None)
    return bool(
        isatty is not None
        and isatty()
        and not environ.get("NO_COLOR")
        and environ.get("TERM", "") != "dumb"
    )


def print_json(value: object) -> None:
    """JSON on stdout; ``\\u`` escapes (still the same JSON) where the console cannot show
    Chinese, and for every character a terminal would not print but obey (C1 controls, DEL,
    bidi overrides: a host's parameter text, DESIGN.md section 11)."""
    text = json.dumps(value, ensure_ascii=not shows_chinese(), indent=2)
    print("".join(c if c.isprintable() or c == "\n" else json.dumps(c)[1:-1] for c in text))


class Progress:
    """A line on stderr that says what is going on, once the work has taken ``after`` seconds,
    updated twice a second and cleared when it ends; only when stderr is a terminal."""

    def __init__(self, what: str, stream: TextIO | None = None, after: float = 1.0) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.after = after
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._width = 0

    def __enter__(self) -> Progress:
        self._done = threading.Event()  # one Progress may cover several steps of one command
        self._thread, self._width = None, 0
        if getattr(self.stream, "isatty", lambda: False)():
            self._thread = threading.Thread(target=self._show, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            if self._width:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()

    def _show(self) -> None:
        started = time.monotonic()
        if self._done.wait(self.after):
            return
        frames = "|/-\\"
        turn = 0
        while not self._done.is_set():
            line = f"{frames[turn % 4]} {self.what} ({time.monotonic() - started:.0f} s)"
            self._width = max(self._width, columns(line) + 2)
            self.stream.write("\r" + line)
            self.stream.flush()
            turn += 1
            self._done.wait(0.5)
