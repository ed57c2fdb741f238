"""The host's time as its answers tell it (fields 12 and 13): the clock check compares the
terminal's clock with it (DESIGN.md section 6)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.wire.message import Message


@dataclass(frozen=True)
class HostClockSample:
    """The host's local time (fields 13 and 12, MMDDhhmmss) and our clock when it arrived."""

    local: float
    host_mmddhhmmss: str


class HostClock:
    """The host's time as its answers (fields 12/13) tell it, since the service started (the
    clock check falls back on the last sign-in's)."""

    def __init__(self) -> None:
        self._last: HostClockSample | None = None

    def saw(self, message: Message) -> None:
        if 12 in message and 13 in message:
            self._last = HostClockSample(time.time(), message.text(13) + message.text(12))

    def sample(self) -> HostClockSample | None:
        return self._last
