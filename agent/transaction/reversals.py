"""The reversal queue (DESIGN.md section 8): what the journal queued is sent before the next
financial request and until the host closes it. An approval confirms a reversal, 12 and 25 close
it (nothing to reverse), 22 closes it as a conflict a person must reconcile."""

from __future__ import annotations

import asyncio
import logging

from agent.host.link import Exchange, HostLink, HostLinkError
from agent.journal import Journal, JournalError
from agent.transaction.macs import Macs
from agent.transaction.stats import GatewayStats
from agent.wire import codes
from agent.wire.builders import reversal_request
from drivers.module import ModuleError

log = logging.getLogger(__name__)


def _approval(exchange: Exchange) -> bool:
    code = exchange.frame.message.text(39, "")
    return codes.is_code(code) and codes.lookup(code).category is codes.Category.APPROVED


class ReversalPending(Exception):
    """A queued reversal could not be closed yet; financial requests wait for it."""


class ReversalSender:
    def __init__(self, journal: Journal, link: HostLink, macs: Macs, stats: GatewayStats) -> None:
        self.journal = journal
        self.link = link
        self.macs = macs
        self.stats = stats
        self.waiting = asyncio.Event()  # set when the journal has queued reversals
        self._lock = asyncio.Lock()

    def late_response(self, exchange: Exchange, earlier: Exchange | None) -> None:
        """The link's handler of responses nobody waited for: an approval of a reversible
        request that was answered otherwise (refused first, or timed out) is reversed
        (DESIGN.md sections 7 and 10). A second approval of an approved request is no charge."""
        if not _approval(exchange) or (earlier is not None and _approval(earlier)):
            return
        response = exchange.frame.message
        try:
            queued = self.journal.reverse_late_approval(response)
        except JournalError as exc:
            log.error("a late approval (STAN %s) could not be queued for reversal: %s",
                      response.text(11, ""), exc)  # fmt: skip
            return
        if queued is not None:
            log.warning(
                "late approval for STAN %s, whose request was answered otherwise: reversing it",
                response.text(11, ""),
            )
            self.waiting.set()

    async def send(self) -> int:
        """Send every queued reversal until the host closes it; returns how many were closed.
        Raises :class:`ReversalPending` at the first that cannot be closed."""
        closed = 0
        async with self._lock:
            for queued in self.journal.queued_reversals():
                message = reversal_request(queued.message, queued.reason)
                try:
                    encoded = await asyncio.to_thread(self.macs.encode, message)
                    exchange = await self.link.request(message, encoded)
                except (HostLinkError, ModuleError) as exc:
                    self.journal.reversal_attempted(queued.id, str(exc))
                    raise ReversalPending(f"STAN {queued.message.text(11)}: {exc}") from None
                self.stats.reversals_sent += 1
                code = exchange.frame.message.text(39, "")
                outcome = codes.reversal_outcome(code)
                done = outcome is not codes.ReversalOutcome.NOT_DONE
                # a forged decline must not close a reversal either: it needs a good MAC too
                mac_ok = done and await asyncio.to_thread(
                    self.macs.response_ok, message, exchange, True
                )
                if not mac_ok:
                    reason = f"host answered {code}" if not done else "response MAC wrong"
                    self.journal.reversal_attempted(queued.id, reason)
                    raise ReversalPending(f"STAN {queued.message.text(11)}: {reason}")
                if outcome is codes.ReversalOutcome.CONFLICT:
                    log.error(
                        "reversal of STAN %s closed as a conflict: the host answered 22 "
                        "(suspected malfunction); a person must reconcile it",
                        queued.message.text(11),
                    )
                self.journal.reversal_closed(queued.id, exchange.frame.message, outcome.value)
                closed += 1
        return closed
