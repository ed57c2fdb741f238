"""What ``agent status``, the control socket, systemd's STATUS= and the fleet's state message
show (DESIGN.md sections 11 and 14): a read of the parts, nothing kept of its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from agent import damaged
from agent.config import Config
from agent.host.link import HostLink
from agent.journal import PATIENCE, Journal, JournalError
from agent.recovery.engine import Recovery
from agent.recovery.policy import State
from agent.transaction.sender import Sender
from agent.transaction.stats import GatewayStats


class StatusView:
    def __init__(
        self,
        settings: Callable[[], Config],
        journal: Journal,
        link: HostLink,
        sender: Sender,
        recovery: Recovery,
        stats: GatewayStats,
    ) -> None:
        self._settings = settings
        self._journal = journal
        self._link = link
        self._sender = sender
        self._recovery = recovery
        self._stats = stats
        # (last sign-in, stuck, to recheck) as the journal last gave them
        self._figures: tuple[dict[str, Any] | None, int, int] = (None, 0, 0)

    async def __call__(self) -> dict[str, Any]:
        """State, host, last sign-in, reversal queue, last refusal, the gateway's counts."""
        config = self._settings()
        link = self._link.status
        journal_error = await self._read_journal(config.reversal.attempts)
        last, stuck, rechecks = self._figures
        message = self._recovery.message
        state = self._state()
        return {
            "state": state,
            "registered": state == State.REGISTERED.value,
            # the stable code of why not (DESIGN.md section 14); "" when registered
            "cause": "host.not-signed-in" if state == "not-signed-in" else self._recovery.cause,
            "incident": self._recovery.incident.source or None,
            "tid": config.terminal.tid,
            "mid": config.terminal.mid,
            "host": {
                "endpoint": link.endpoint,
                "connected": link.connected,
                "last_error": link.last_error,
                "late_responses": link.late_responses,
            },
            "signed_in": {"at": last["at"], "scheme": last["scheme"], "kcvs": last["kcvs"]}
            if last
            else None,
            "reversals_queued": self._journal.queued_reversals_count,
            "reversals_stuck": stuck,
            "reversals_to_recheck": rechecks,
            "journal_error": journal_error,
            # damaged journals set aside beside this one, until a technician moves them away
            # (DESIGN.md section 8: their reversals may still need settling)
            "journal_damaged": [str(copy) for copy in damaged.copies(self._journal.path)],
            # provisioning.json or parameters.json set aside, as the self-check reports them
            "state_damaged": [str(copy) for copy in damaged.state_copies(config)],
            "last_refusal": self._recovery.last_refusal,
            # refusals of single requests while the terminal stayed registered (DESIGN.md
            # section 7 point 4), by finding, and the last one with what the merchant was told
            "refused_requests": {
                "by_finding": dict(self._recovery.refused_requests.by_finding),
                "last": self._recovery.refused_requests.last,
            },
            "message": message.to_json() if message else None,
            "counts": dict(self._recovery.counts),
            "gateway": dataclasses.asdict(self._stats),
        }

    async def _read_journal(self, attempts: int) -> str | None:
        """Refresh the journal's figures; why they could not be, if they could not."""
        journal = self._journal

        def read() -> tuple[dict[str, Any] | None, int, int]:
            # stuck: tried reversal.attempts times and still queued (the one rule for "stuck")
            _, stuck = journal.reversal_counts(attempts)
            return journal.last_signin(), stuck, journal.rechecks_waiting()

        try:
            self._figures = await journal.within(PATIENCE, read)
        except JournalError as exc:
            return f"{exc}; its figures here are the last it gave"
        return None

    def _state(self) -> str:
        recovery = self._recovery
        if recovery.state is State.REGISTERED and not self._sender.signed_in:
            return "not-signed-in"  # no sign-in has succeeded since the service started
        return recovery.state.value

    def line(self) -> str:
        """One line for systemd's STATUS=, from memory only (it is sent from signal handlers
        and the watchdog, which must never wait for a disk)."""
        host = self._link.status.endpoint or "no host"
        queued = self._journal.queued_reversals_count
        cause = f" ({self._recovery.cause})" if self._recovery.cause else ""
        return f"{self._state()}{cause}, host {host}, {queued} reversal(s) queued"
