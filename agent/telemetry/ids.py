"""Numbers the fleet relies on never going back (DESIGN.md section 14): event ids (a subscriber
drops a repeat by ``(serial, id)``) and the state's ``seq``. Event ids are the journal outbox's
(AUTOINCREMENT: never reused while that journal lives); this file, beside the journal, keeps the
highest of each ever handed to the broker, so a journal moved aside (damaged) or deleted starts
its ids above it, and ``seq`` goes on across restarts. It is written, whole and renamed, before
a number leaves: what the broker may have seen is never below what the file says. Should the file
itself be lost or damaged beside a journal that has numbered events, both numbers go on from the
clock instead (microseconds since the epoch: above every number counted before, since a million
a second outruns any event rate and a connection's will gap)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

NAME = "telemetry-ids.json"


class HighWater:
    """The highest event id and ``seq`` handed out; thread-safe enough for its one writer (the
    publisher's thread) and readers that only start from it."""

    def __init__(
        self, path: Path, *, fresh: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        """``fresh``: nothing was numbered before (no journal yet), so no file means 0."""
        self.path = path
        self._fresh = fresh
        self._clock = clock
        self.event_id, self.seq = self._read()

    @classmethod
    def beside(cls, journal: Path) -> HighWater:
        """The marks of the journal at ``journal`` (a file beside it)."""
        return cls(journal.with_name(NAME), fresh=not journal.exists())

    def _read(self) -> tuple[int, int]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            event_id, seq = raw["event_id"], raw["seq"]
            if not all(isinstance(n, int) and n >= 0 for n in (event_id, seq)):
                raise ValueError("not whole numbers")
            return event_id, seq
        except FileNotFoundError:
            if self._fresh:
                return 0, 0
            # also a terminal whose telemetry was never on (nothing numbered): said, not warned
            level, why = logging.INFO, "missing beside a journal"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            level, why = logging.WARNING, f"unreadable: {exc}"
        above = int(self._clock() * 1_000_000)
        log.log(level, "telemetry ids %s %s: event ids and seq go on from %d (the clock)",
                self.path, why, above)  # fmt: skip
        return above, above

    def reach(self, event_id: int = 0, seq: int = 0) -> bool:
        """Raise the marks to at least these and write them before they are used; False when
        the file cannot be written (the numbers are used anyway: a full disk must not silence
        the fleet)."""
        if event_id <= self.event_id and seq <= self.seq:
            return True
        self.event_id, self.seq = max(event_id, self.event_id), max(seq, self.seq)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as out:
                json.dump({"event_id": self.event_id, "seq": self.seq}, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            log.warning("telemetry ids %s cannot be written: %s", self.path, exc)
            return False
        return True
