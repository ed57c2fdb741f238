"""The agent's side of telemetry: it looks at the agent's state at every change (and once a
second) and hands what changed to the publisher (retained state) and the textfile (rewritten at
least once a minute, ``offline`` when the agent stops); it tells the publisher when the journal's
outbox has something new, and hands it the latest full self-check report. It carries the
fleet's words back: an incident of the acquirer opens or closes :class:`HostIncident`, and an
operator's command is carried out by :class:`Commands` and answered. All of it is cheap and in
memory: telemetry never delays a payment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.backoff import Backoff
from agent.config import Config, TelemetryConfig
from agent.journal import PATIENCE, Journal, JournalError
from agent.recovery.incident import HostIncident
from agent.telemetry import events, textfile
from agent.telemetry.ids import HighWater
from agent.telemetry.reports import LatestReport
from agent.telemetry.state import (
    Identity,
    Topics,
    acquirer_of,
    iso,
    offline,
    state_message,
    topic_level,
)

if TYPE_CHECKING:
    from agent.telemetry.commands import Commands
    from agent.telemetry.publisher import Publisher

log = logging.getLogger(__name__)

LOOK_EVERY = 1.0  # seconds between looks at the agent's state when nothing changes
# seconds between rewrites of an unchanged textfile: node_exporter's reader sees one fresh within
# a minute, even when a look at the state waits out the journal's patience
TEXTFILE_EVERY = 50.0
MAX_INCIDENT = 65_536  # bytes of an incident message worth reading
SERIAL_FIRST, SERIAL_MAX = 5.0, 300.0  # pauses while the module does not give its serial


class ModuleIdentity:
    """How the reporter learns who the terminal is: the module's serial and TUSN."""

    def __init__(
        self, serial: Callable[[], Awaitable[str]], tusn: Callable[[], Awaitable[str]]
    ) -> None:
        self.serial = serial
        self.tusn = tusn


class Reporter:
    def __init__(
        self,
        settings: Callable[[], Config],
        journal: Journal,
        status: Callable[[], Awaitable[dict[str, Any]]],
        changed: Callable[[], Awaitable[None]],
        module: ModuleIdentity,
        reports: LatestReport,
        *,
        ids: HighWater,
        incident: HostIncident,
        commands: Commands | None,
    ) -> None:
        """``changed`` returns at the next change of state; ``commands``: None when operator
        commands are off (or not allowed: they need TLS with a pinned CA)."""
        self._settings = settings
        self.journal = journal
        self._status = status
        self._changed = changed
        self._module = module
        self._reports = reports
        self._ids = ids
        self.incident = incident
        self._commands = commands
        self.publisher: Publisher | None = None  # once run() knows the module's serial
        self._last_97: float | None = None
        self._dropped = 0  # events the outbox dropped, as the journal last said
        self._shown: dict[str, Any] | None = None
        self._counters: dict[str, int] = {}  # the fleet's counters, as the status last said
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def telemetry(self) -> TelemetryConfig:
        return self._settings().telemetry

    async def run(self) -> None:
        if self._last_97 is None:  # the state says when, also after a restart
            with contextlib.suppress(JournalError):
                self._last_97 = await self.journal.within(
                    PATIENCE, self.journal.last_event_at, events.REFUSED, code="97"
                )
        identity = await self._identity()
        since, outbox_seen = time.time(), -1
        shown = await self._message(identity, since)
        # run() again (supervised, after a failure) keeps the publisher it started: a second
        # client with the same id would push the first off the broker, and back
        starting = self.publisher is None and bool(self.telemetry.broker)
        if starting:
            self.publisher = self._publisher(identity)
        self._show(shown)  # before the first connection: its will is made from it
        written = time.monotonic()
        if starting and self.publisher is not None:
            self.publisher.start()
        while True:
            message = await self._message(identity, since)
            if message["state"] != shown["state"]:  # since: in this state, whatever the cause
                since = time.time()
                message["since"] = iso(since)
            stale = time.monotonic() - written >= TEXTFILE_EVERY
            if _without_time(message) != _without_time(shown) or stale:
                self._show(message, publish=_without_time(message) != _without_time(shown))
                shown, written = message, time.monotonic()
            if self.publisher is not None and self.journal.outbox_written != outbox_seen:
                outbox_seen = self.journal.outbox_written
                self.publisher.wake()
            report = self._reports.take()
            if report is not None and self.publisher is not None:
                self.publisher.publish_selftest(report)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LOOK_EVERY):
                    await self._changed()

    async def _identity(self) -> Identity:
        """Who the terminal is; the serial is the topics' key, so it is waited for. The textfile
        does not wait: a terminal whose module gives no serial is one to watch (its serial label
        empty meanwhile)."""
        backoff = Backoff(SERIAL_FIRST, SERIAL_MAX)
        while not (serial := await self._module.serial()):
            pause = backoff.failed()
            log.warning("telemetry: the module gives no serial yet; asking again in %.0f s", pause)
            until = time.monotonic() + pause
            while (left := until - time.monotonic()) > 0:
                if self.telemetry.textfile:
                    unknown = Identity("", "", acquirer_of(self._settings()))
                    self._show(await self._message(unknown, time.time()), publish=False)
                await asyncio.sleep(min(left, TEXTFILE_EVERY))
        return Identity(serial, await self._module.tusn(), acquirer_of(self._settings()))

    def _publisher(self, identity: Identity) -> Publisher:
        from agent.telemetry import mqtt
        from agent.telemetry.publisher import Publisher  # paho only when a broker is set

        settings = self.telemetry
        commands = None
        if self._commands is not None:
            if mqtt.pinned_tls(settings, settings.broker):
                commands = self._command_received
            else:
                log.warning("telemetry.commands is on but the broker is not TLS with a pinned "
                            "CA (mqtts:// and telemetry.ca_file): commands stay off")  # fmt: skip
        loop = asyncio.get_running_loop()
        return Publisher(
            settings,
            self.journal,
            f"pos-agent-{topic_level(identity.serial)}",
            Topics(settings.topic_prefix, topic_level(identity.serial)),
            ids=self._ids,
            acquirer=identity.acquirer,
            on_incident=lambda payload: loop.call_soon_threadsafe(self._incident_heard, payload),
            on_command=None
            if commands is None
            else lambda cid, payload: loop.call_soon_threadsafe(commands, cid, payload),
        )

    async def _message(self, identity: Identity, since: float) -> dict[str, Any]:
        status = await self._status()
        refusal = status.get("last_refusal") or {}
        if refusal.get("code") == "97":
            self._last_97 = refusal.get("at")
        with contextlib.suppress(JournalError):  # else the count last read (a frozen disk)
            self._dropped = await self.journal.within(PATIENCE, lambda: self.journal.outbox_dropped)
        message = state_message(status, identity, since, self._last_97, self._dropped, time.time())
        self._counters = _counters(status)
        return message

    def _show(self, message: dict[str, Any], publish: bool = True) -> None:
        self._shown = message
        if self.publisher is not None and publish:
            self.publisher.publish_state(message)
        self._write_textfile(message)

    def _write_textfile(self, message: dict[str, Any]) -> None:
        if self.telemetry.textfile:
            try:
                textfile.write(Path(self.telemetry.textfile), message, self._counters)
            except OSError as exc:
                log.warning("telemetry textfile %s: %s", self.telemetry.textfile, exc)

    # --------------------------------------------------------------------- from the fleet

    def _incident_heard(self, payload: bytes | None) -> None:
        """The acquirer's retained incident: a host-side one opens, an empty message closes;
        none retained at a (re)subscription closes one the fleet opened: it was closed while
        this terminal was away from the broker (an operator's stays)."""
        source = "fleet incident"
        if payload is None:
            if self.incident.source == source and self.incident.close(source):
                self.journal.note("incident", state="closed", source=source,
                                  why="none retained at the broker")  # fmt: skip
            return
        if not payload:
            if self.incident.close(source):
                self.journal.note("incident", state="closed", source=source)
            return
        try:
            incident = json.loads(payload[:MAX_INCIDENT]) if len(payload) <= MAX_INCIDENT else None
        except (ValueError, RecursionError):
            incident = None
        if not isinstance(incident, dict) or incident.get("kind") != "host-side":
            log.warning("telemetry: an incident message that is not one (%d bytes) ignored",
                        len(payload))  # fmt: skip
            return
        detail = {k: incident.get(k) for k in ("opened", "terminals") if k in incident}
        if self.incident.open(source, detail):
            self.journal.note("incident", state="open", source=source, **detail)

    def _command_received(self, command_id: str, payload: bytes) -> None:
        task = asyncio.ensure_future(self._answer(command_id, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, command_id: str, payload: bytes) -> None:
        assert self._commands is not None
        result = await self._commands.handle(command_id, payload)
        if self.publisher is not None:
            self.publisher.publish_result(command_id, result)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._shown is not None:  # node_exporter must not go on reading "registered"
            self._write_textfile(offline(self._shown, "service.stopped", time.time()))
        if self.publisher is not None:
            await asyncio.to_thread(self.publisher.stop)


def _counters(status: dict[str, Any]) -> dict[str, int]:
    counts = status.get("counts") or {}
    refused = (status.get("refused_requests") or {}).get("by_finding") or {}
    return {"97": int(counts.get("97", 0)), "recoveries": int(counts.get("recoveries", 0)),
            "refused_requests": sum(int(n) for n in refused.values())}  # fmt: skip


def _without_time(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "at"}
