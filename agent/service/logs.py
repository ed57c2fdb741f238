"""The service's log lines. Under systemd, stderr goes to journald: when ``JOURNAL_STREAM``
names our stderr (systemd.exec(5)), every line starts with the syslog priority ``<N>`` that
journald reads as the entry's level (sd-daemon(3)), so ``journalctl -p warning`` shows the
agent's warnings; a traceback's lines carry the level of the record they belong to. Elsewhere
the lines are plain."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

FORMAT = "%(levelname)s %(name)s: %(message)s"  # journald adds the time and the unit


def priority(level: int) -> int:
    """syslog(3) priority of a logging level: 2 crit, 3 err, 4 warning, 6 info, 7 debug."""
    for floor, value in (
        (logging.CRITICAL, 2),
        (logging.ERROR, 3),
        (logging.WARNING, 4),
        (logging.INFO, 6),
    ):
        if level >= floor:
            return value
    return 7


class JournaldFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def writes_to_journal(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (device:inode match)."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


def setup(verbose: bool = False, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    formatter = JournaldFormatter if writes_to_journal(stream) else logging.Formatter
    handler.setFormatter(formatter(FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
