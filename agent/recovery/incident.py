"""A host-side incident the fleet announced for this terminal's acquirer (DESIGN.md sections 7
point 5 and 14): many terminals of one acquirer refused at once is the host's fault, not theirs.
While one is open, recovery signs in at most once per ``recovery.incident_signin_every``, never
re-provisions, and tells the merchant the acquirer has a fault. It is opened and closed by the
retained message on ``<prefix>/incidents/<acquirer host>`` (the watcher's) or by an operator's
``incident`` command for this terminal."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from agent import messages

log = logging.getLogger(__name__)

CAUSE = "host.incident"  # the stable cause code of a terminal paused by one
REASON = messages.message(CAUSE)
NOTHING_TO_DO = messages.remedy(CAUSE)


class HostIncident:
    """Whether an incident is open, since when and who said so (``source``: the watcher's
    topic or ``command``). Set from telemetry's thread-safe hand-over on the event loop."""

    def __init__(self) -> None:
        self.opened_at: float | None = None  # epoch seconds, as announced or when heard
        self.source = ""
        self.detail: dict[str, Any] = {}
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        """Return when it next opens or closes (the sign-in probe looks again at once)."""
        await self._changed.wait()

    def _tell(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def open(self, source: str, detail: dict[str, Any] | None = None) -> bool:
        """Open (or keep open); True when it was closed."""
        was_closed = not self.is_open
        if was_closed:
            self.opened_at = time.time()
            log.warning("host-side incident announced (%s): the acquirer is at fault", source)
        self.source, self.detail = source, dict(detail or {})
        if was_closed:
            self._tell()
        return was_closed

    def close(self, source: str) -> bool:
        """Close; True when it was open."""
        was_open = self.is_open
        if was_open:
            log.info("host-side incident closed (%s)", source)
        self.opened_at, self.source, self.detail = None, "", {}
        if was_open:
            self._tell()
        return was_open
