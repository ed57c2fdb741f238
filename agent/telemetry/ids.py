"""Numbers the fleet relies on never going back (DESIGN.md section 14): event ids (a subscriber
drops a repeat by ``(serial, id)``) and the state's ``seq``. Event ids are the journal outbox's
(AUTOINCREMENT: never reused while that journal lives); this file, beside the journal, keeps the
highest of each ever handed to the broker, so a journal moved aside (damaged) or deleted starts
its ids above it, and ``seq`` goes on across restarts. It is written, whole and renamed, before
a number leaves: what the broker may have seen is never below what the file says."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

NAME = "telemetry-ids.json"


def path_beside(journal: Path) -> Path:
    return journal.with_name(NAME)


class HighWater:
    """The highest event id and ``seq`` handed out; thread-safe enough for its one writer (the
    publisher's thread) and readers that only start from it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.event_id, self.seq = self._read()

    def _read(self) -> tuple[int, int]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            event_id, seq = raw["event_id"], raw["seq"]
            if not all(isinstance(n, int) and n >= 0 for n in (event_id, seq)):
                raise ValueError("not whole numbers")
            return event_id, seq
        except FileNotFoundError:
            return 0, 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # unreadable: the journal's own sequence and a time-based seq still move forward
            log.warning("telemetry ids %s unreadable (%s): starting from the journal's", self.path,
                        exc)  # fmt: skip
            return 0, 0

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
