"""Journal writes the disk could not take when they were due (DESIGN.md section 8: "what the
agent knows is never lost while it runs"): kept in memory, in order, and written as soon as the
journal takes writes again. Each write is a closure over what it records, never card data."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from agent.blocking import patiently
from agent.journal import PATIENCE, Journal, JournalError

T = TypeVar("T")

log = logging.getLogger(__name__)


class DeferredWrites:
    """Each write runs on the journal's thread (:meth:`Journal.run`), never on the loop."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._flushing = asyncio.Lock()  # a write that waits is written once
        # (what, the write, what the loop does once it is written)
        self._writes: list[tuple[str, Callable[[], object], Callable[[], None] | None]] = []

    def __len__(self) -> int:
        return len(self._writes)

    async def now_or_later(self, what: str, write: Callable[[], T]) -> T | None:
        """``write()`` now; if the journal refuses it, kept for :meth:`flush` (None then)."""
        try:
            return await self._journal.run(write)
        except JournalError:
            self.add(what, write)
            return None

    def add(
        self, what: str, write: Callable[[], object], then: Callable[[], None] | None = None
    ) -> None:
        """Keep ``write`` for :meth:`flush`; ``then`` runs on the loop once it is written."""
        log.error("the journal could not record %s; kept in memory until it can", what)
        self._writes.append((what, write, then))

    async def flush(self) -> bool:
        """Write what waits, oldest first, until the journal refuses again. Returns whether
        anything was written (a reversal may now be queued)."""
        written = False
        async with self._flushing:
            while self._writes:
                what, write, then = self._writes[0]
                try:
                    await self._journal.run(write)
                except JournalError:
                    break
                self._writes.pop(0)
                written = True
                log.warning("the journal has now recorded %s", what)
                if then is not None:
                    then()
        return written

    async def close(self) -> None:
        """At the stop: what waits is written if the journal takes it now (its patience at
        most); what it still refuses ends with the process, each named in the log for a person
        (a row it left pending is reversed at the next start, DESIGN.md section 8)."""
        flushing = asyncio.ensure_future(self.flush())
        try:
            await patiently(flushing, PATIENCE)
            why = "the journal refused it to the end"
        except TimeoutError:  # the write under way goes on in the journal's thread
            flushing.cancel()
            why = "the journal did not take it in time (the first may yet be written)"
        for what, _, _ in self._writes:
            log.critical("stopping with %s unrecorded: %s", what, why)
