"""The service while its journal cannot be opened (a full state partition, a journal of a newer
agent after a rolled-back update, permissions): no request may leave unrecorded, so none leaves;
but the app still gets an answer to each, the technician a status, systemd its READY and watchdog,
instead of a service that exits and is restarted every few seconds with nothing answering
(DESIGN.md section 8: a journal error is answered ``96`` with the reason, never a closed
connection). ``agent selftest`` runs as without a service (an update's health gate sees the
journal fail its check). Every :data:`RETRY` seconds, and at SIGHUP (which reloads the
configuration too), the journal is tried again; once it opens and takes a write, the agent starts
as usual, under the configuration in effect then. A damaged journal never comes here: it is set
aside and a fresh one started (:meth:`Journal.open_for_service`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from agent import damaged, paths
from agent.config import Config
from agent.journal import JournalError
from agent.service.assembly import open_journal
from agent.service.control import ControlServer
from agent.service.notify import Notifier
from agent.telemetry import ids
from agent.transaction.app_socket import AppSocket, Reply
from agent.transaction.sender import encode_local, local_answer, unreadable_answer
from agent.transaction.stats import GatewayStats
from agent.wire.errors import DecodeError
from agent.wire.frame import LENGTH_BYTES, Layout, decode_frame, host_frame
from agent.wire.message import Message, decode_message
from agent.wire.profile import Profile

log = logging.getLogger(__name__)

RETRY = 5.0  # seconds between tries of the journal


class JournalUnusable(Exception):
    """The journal cannot be opened, or its pending requests not recovered, at the start."""

    def __init__(self, error: JournalError) -> None:
        super().__init__(str(error))
        self.error = error


STATE = "journal-unusable"


class Refusing:
    """The payment socket's mode: every request answered ``96`` with why, in the framing of the
    configured mode (wrap: the app's message; pass-through: the host's frame)."""

    def __init__(self, profile: Profile, pass_through: bool, reason: Callable[[], str]) -> None:
        self._profile = profile
        self._pass_through = pass_through
        self._reason = reason

    async def process(self, frame: bytes) -> Reply | None:
        answer = self.failed(frame, self._reason())
        return None if answer is None else Reply(answer)

    def failed(self, frame: bytes, reason: str) -> bytes | None:
        try:
            if self._pass_through:
                inspected = decode_frame(frame, Layout.TPDU, self._profile)
                assert inspected.tpdu is not None and inspected.header is not None
                answer = self._encoded(
                    local_answer(inspected.message, "96", "storage.journal-unusable", reason)
                )
                framed = host_frame(answer, inspected.tpdu.swapped(), inspected.header)
                return framed[LENGTH_BYTES:]  # the payment socket puts the length in front
            request = decode_message(frame, self._profile)
        except DecodeError as exc:
            if self._pass_through:
                return None  # not even its framing can be read: the connection closes
            return self._encoded(unreadable_answer(frame, str(exc)))
        return self._encoded(local_answer(request, "96", "storage.journal-unusable", reason))

    def _encoded(self, answer: Message) -> bytes:
        return encode_local(answer, self._profile)


def status(config: Config, error: Callable[[], str]) -> dict[str, Any]:
    """``agent status`` in the shape of the running agent's, with what is known without the
    journal."""
    return {
        "state": STATE,
        "registered": False,
        "cause": "storage.journal-unusable",
        "incident": None,
        "tid": config.terminal.tid,
        "mid": config.terminal.mid,
        "host": {"endpoint": "", "connected": False, "last_error": "", "late_responses": 0},
        "signed_in": None,
        "reversals_queued": 0,
        "reversals_stuck": 0,
        "reversals_to_recheck": 0,
        "journal_error": error(),
        "journal_damaged": [str(copy) for copy in damaged.copies(paths.journal_path(config))],
        "state_damaged": [str(copy) for copy in damaged.state_copies(config)],
        "last_refusal": None,
        "refused_requests": {"by_finding": {}, "last": None},
        "message": None,
        "counts": {},
        "gateway": {},
    }


async def until_the_journal_opens(
    config: Config, error: JournalError, reload: Callable[[], Config] | None
) -> Config | None:
    """Serve refusals until the journal opens and takes a write: the configuration to start
    with (reloaded at SIGHUP meanwhile); None when the service is told to stop first."""
    last = [str(error)]
    log.critical("%s: every request is answered 96 until it can be opened (tried every %g s)",
                 error, RETRY)  # fmt: skip
    pass_through = config.gateway.mode == "pass-through"
    app = AppSocket(
        Refusing(config.wire.profile, pass_through, lambda: f"not sent: {last[0]}"),
        GatewayStats(),
        max_clients=config.gateway.max_clients,
        idle_timeout=config.gateway.idle_timeout,
    )

    async def status_now(_: dict[str, Any]) -> dict[str, Any]:
        return status(config, lambda: last[0])

    async def selftest(request: dict[str, Any]) -> dict[str, Any]:
        """As without a service: the module and the journal as they are (the journal's check
        says why it cannot be opened)."""
        from agent.selfcheck import asked
        from agent.selfcheck.local import run_local

        report = await run_local(config, asked(request.get("only")))
        return {
            "duration_ms": report.duration_ms,
            "checks": [check.to_json() for check in report.checks],
        }

    async def unavailable(_: dict[str, Any]) -> dict[str, Any]:
        raise JournalError(f"the agent runs without its journal: {last[0]}")

    control = ControlServer(
        {"status": status_now, "selftest": selftest}
        | dict.fromkeys(("journal", "params", "signin", "echo", "provision"), unavailable)
    )
    notify = Notifier()
    stop, again = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        await app.serve(paths.payment_socket(config), config.gateway.tcp_port)
        await control.serve(paths.control_socket(config))
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, again.set)
        notify("READY=1", f"STATUS={STATE}: {last[0]}")
        while not stop.is_set():
            if notify.watchdog_interval:
                notify("WATCHDOG=1")
            pause = min(RETRY, notify.watchdog_interval or RETRY)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await _either(stop, again)
            if again.is_set():  # SIGHUP: the configuration afresh, and the journal at once
                again.clear()
                if reload is not None:
                    config = _reloaded(config, reload)
            try:
                await asyncio.to_thread(_takes_a_write, config)
            except JournalError as exc:
                if str(exc) != last[0]:
                    log.critical("%s: requests still answered 96", exc)
                last[0] = str(exc)
                notify(f"STATUS={STATE}: {last[0]}")
                continue
            if stop.is_set():  # asked to stop while the journal was tried
                break
            log.warning("journal %s works now: the agent starts", paths.journal_path(config))
            return config
        return None
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        await control.close()
        await app.close()
        await app.wait_closed()
        notify.close()


def _reloaded(config: Config, reload: Callable[[], Config]) -> Config:
    try:
        fresh = reload()
    except Exception as exc:  # the reload's own message names the file and the field
        log.error("configuration not reloaded: %s", exc)
        return config
    log.info("configuration reloaded")
    return fresh


def _takes_a_write(config: Config) -> None:
    """Open the journal as the service does and take one durable write (a STAN: skipping one
    costs nothing): a journal that opens on a full disk would fail the start again."""
    journal = open_journal(config, ids.HighWater.beside(paths.journal_path(config)))
    try:
        journal.next_stan()
    finally:
        journal.close()


async def _either(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
