"""What ``agent status``, the control socket, systemd's STATUS= and the fleet's state message
show (DESIGN.md sections 11 and 14): a read of the parts, nothing kept of its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from agent.config import Config
from agent.host.link import HostLink
from agent.journal import Journal
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

    def __call__(self) -> dict[str, Any]:
        """State, host, last sign-in, reversal queue, last refusal, the gateway's counts."""
        config = self._settings()
        link = self._link.status
        last = self._journal.last_signin()
        # stuck: tried reversal.attempts times and still queued (the one rule for "stuck")
        queued, stuck = self._journal.reversal_counts(config.reversal.attempts)
        recovery = self._recovery
        message = recovery.message
        state = recovery.state.value
        if recovery.state is State.REGISTERED and not self._sender.signed_in:
            state = "not-signed-in"  # no sign-in has succeeded since the service started
        return {
            "state": state,
            "registered": state == State.REGISTERED.value,
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
            "reversals_queued": queued,
            "reversals_stuck": stuck,
            "reversals_to_recheck": self._journal.rechecks_waiting(),
            "last_refusal": recovery.last_refusal,
            "message": message.to_json() if message else None,
            "gateway": dataclasses.asdict(self._stats),
        }

    def line(self) -> str:
        """One line for systemd's STATUS=."""
        status = self()
        host = status["host"]["endpoint"] or "no host"
        return f"{status['state']}, host {host}, {status['reversals_queued']} reversal(s) queued"
