"""The agent's side of telemetry: once a second it looks at the agent's state and hands what
changed to the publisher (retained state) and the textfile; it tells the publisher when the
journal's outbox has something new, and hands it the latest full self-check report. All of it is
cheap and in memory: telemetry never delays a payment."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import TelemetryConfig
from agent.journal import PATIENCE, Journal, JournalError
from agent.telemetry import textfile
from agent.telemetry.state import Topics, iso, state_message

if TYPE_CHECKING:
    from agent.telemetry.publisher import Publisher

log = logging.getLogger(__name__)

LOOK_EVERY = 1.0  # seconds between looks at the agent's state


class LatestReport:
    """The sink of full self-check reports: the self-check puts each one here as it is made,
    the reporter publishes the latest (retained) when it next looks."""

    def __init__(self) -> None:
        self.report: dict[str, Any] | None = None

    def put(self, report: dict[str, Any]) -> None:
        self.report = report

    def take(self) -> dict[str, Any] | None:
        report, self.report = self.report, None
        return report


class Reporter:
    def __init__(
        self,
        settings: TelemetryConfig,
        journal: Journal,
        status: Callable[[], Awaitable[dict[str, Any]]],
        serial: Callable[[], Awaitable[str]],
        reports: LatestReport,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self._status = status
        self._serial = serial
        self._reports = reports
        self.publisher: Publisher | None = None  # once run() knows the module's serial
        self._last_97: float | None = None
        self._dropped = 0  # events the outbox dropped, as the journal last said

    async def run(self) -> None:
        serial = await self._serial()
        since, outbox_seen = time.time(), -1
        shown = await self._message(serial, since)
        terminal = shown["tid"] or f"serial-{serial or 'unknown'}"
        # run() again (supervised, after a failure) keeps the publisher it started: a second
        # client with the same id would push the first off the broker, and back
        starting = self.publisher is None and bool(self.settings.broker)
        if starting:
            from agent.telemetry.publisher import Publisher  # paho only when a broker is set

            client_id = f"pos-agent-{serial or terminal}"
            topics = Topics.of(self.settings.topic_prefix, terminal)
            self.publisher = Publisher(self.settings, self.journal, client_id, topics)
        self._show(shown)  # before the first connection: its will is made from it
        if starting and self.publisher is not None:
            self.publisher.start()
        while True:
            message = await self._message(serial, since)
            if message["state"] != shown["state"]:
                since = time.time()
                message["since"] = iso(since)
            if _without_time(message) != _without_time(shown):
                self._show(message)
                shown = message
            if self.publisher is not None and self.journal.outbox_written != outbox_seen:
                outbox_seen = self.journal.outbox_written
                self.publisher.wake()
            report = self._reports.take()
            if report is not None and self.publisher is not None:
                self.publisher.publish_selftest(report)
            await asyncio.sleep(LOOK_EVERY)

    async def _message(self, serial: str, since: float) -> dict[str, Any]:
        status = await self._status()
        refusal = status.get("last_refusal") or {}
        if refusal.get("code") == "97":
            self._last_97 = refusal.get("at")
        with contextlib.suppress(JournalError):  # else the count last read (a frozen disk)
            self._dropped = await self.journal.within(PATIENCE, lambda: self.journal.outbox_dropped)
        return state_message(status, serial, since, self._last_97, self._dropped, time.time())

    def _show(self, message: dict[str, Any]) -> None:
        if self.publisher is not None:
            self.publisher.publish_state(message)
        if self.settings.textfile:
            try:
                textfile.write(Path(self.settings.textfile), message)
            except OSError as exc:
                log.warning("telemetry textfile %s: %s", self.settings.textfile, exc)

    async def close(self) -> None:
        if self.publisher is not None:
            await asyncio.to_thread(self.publisher.stop)


def _without_time(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "at"}
