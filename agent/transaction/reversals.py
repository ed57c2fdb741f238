"""The reversal queue (DESIGN.md section 8): what the journal queued is sent before the next
financial request and until the host closes it. An approval confirms a reversal, 12 and 25 close
it (nothing to reverse), 22 closes it as a conflict a person must reconcile.

A reversal closed with 12 or 25 may have overtaken its original: a request stuck in a host that
stopped reading reaches it after the reversal went through the backup, and is approved there
with nobody left to read the answer. So it is sent once more, in the background,
``reversal.recheck_after`` seconds later; sales never wait for that recheck."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from agent.backoff import pause
from agent.host.link import Exchange, HostLink, HostLinkError
from agent.journal import Journal, JournalError, Reversal
from agent.recovery.policy import refused
from agent.transaction.deferred import DeferredWrites
from agent.transaction.macs import Macs
from agent.transaction.stats import GatewayStats
from agent.wire import codes
from agent.wire.builders import reversal_request
from agent.wire.message import Message
from drivers.module import ModuleError

log = logging.getLogger(__name__)


class ReversalPending(Exception):
    """A queued reversal could not be closed yet; ``attempts`` is how many tries it has had."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class _Repairable(Exception):
    """The host refused a reversal with a code recovery can act on."""

    def __init__(self, answer: Message) -> None:
        super().__init__(answer.text(39, ""))
        self.answer = answer


# Told of a reversal the host refused with a terminal-config, session or security code (it lost
# the session or the keys): recovery runs, then the reversal goes again.
Refused = Callable[[Message], Awaitable[None]]


class ReversalSender:
    def __init__(
        self,
        journal: Journal,
        link: HostLink,
        macs: Macs,
        stats: GatewayStats,
        deferred: DeferredWrites,
        recheck_after: Callable[[], float],
        on_refused: Refused | None = None,
    ) -> None:
        self.journal = journal
        self._recheck_after = recheck_after
        self.deferred = deferred
        self._on_refused = on_refused
        self.link = link
        self.macs = macs
        self.stats = stats
        self.waiting = asyncio.Event()  # set when the journal has queued reversals
        self._lock = asyncio.Lock()
        # reversals the host closed whose outcome the journal could not take (a full disk):
        # kept here, never sent again, written when the journal takes writes again
        self._unwritten: dict[int, tuple[Message, str]] = {}

    def late_response(self, exchange: Exchange, earlier: Exchange | None) -> None:
        """The link's handler of responses nobody waited for: an approval of a reversible
        request that was answered otherwise (refused first, or timed out) is reversed
        (DESIGN.md sections 7 and 10). A second approval of an approved request is no charge."""

        def approval(response: Exchange) -> bool:
            return codes.approved(response.frame.message.text(39, ""))

        if not approval(exchange) or (earlier is not None and approval(earlier)):
            return
        response = exchange.frame.message
        queued = self.deferred.now_or_later(
            f"the reversal of a late approval (STAN {response.text(11, '')})",
            lambda: self.journal.reverse_late_approval(response),
        )
        if queued is not None:
            log.warning(
                "late approval for STAN %s, whose request was answered otherwise: reversing it",
                response.text(11, ""),
            )
            self.waiting.set()

    async def send(self) -> int:
        """Send every queued reversal until the host closes it; returns how many were closed.
        Raises :class:`ReversalPending` at the first that cannot be closed, a journal that
        cannot be read or written included: the caller always has an answer to give."""
        closed = 0
        async with self._lock:
            try:
                self.deferred.flush()
                self._write_outcomes()
                queued_now = self.journal.queued_reversals()
            except JournalError as exc:
                raise ReversalPending(f"journal: {exc}", 0) from None
            for queued in queued_now:
                if queued.id in self._unwritten:
                    continue  # closed by the host already; only the journal lags behind
                try:
                    exchange = await self._try(queued, queued.attempts, self._on_refused)
                except _Repairable as refusal:
                    assert self._on_refused is not None
                    # the host lost the session or the keys: repair, then once more
                    await self._on_refused(refusal.answer)
                    exchange = await self._try(queued, queued.attempts + 1, None)
                answer = exchange.frame.message
                outcome = codes.reversal_outcome(answer.text(39, "")).value
                self._unwritten[queued.id] = (answer, outcome)
                closed += 1
                try:
                    self._write_outcomes()
                except JournalError as exc:
                    log.error(
                        "reversal of STAN %s closed by the host (%s); the journal cannot take "
                        "it yet, kept in memory: %s", queued.message.text(11), outcome, exc,
                    )  # fmt: skip
        return closed

    def _write_outcomes(self) -> None:
        for reversal_id, (answer, outcome) in list(self._unwritten.items()):
            self.journal.reversal_closed(reversal_id, answer, outcome, self._recheck_after())
            del self._unwritten[reversal_id]

    async def recheck(self) -> int:
        """Send once more each reversal closed as "nothing to reverse" whose recheck is due;
        returns how many the host then reversed after all. One without a closing answer goes
        again later, with the agent's back-off from one recheck period."""
        reversed_now = 0
        async with self._lock:
            for due in self.journal.reversals_to_recheck():
                stan = due.message.text(11)
                try:
                    exchange = await self._try(due, due.attempts, None)
                except ReversalPending as exc:
                    log.warning("recheck of the reversal of STAN %s: %s; again later", stan, exc)
                    period = self._recheck_after()
                    later = pause(period, period * 8, due.attempts)  # tries of this reversal
                    self.journal.postpone_recheck(due.id, later)
                    continue
                answer = exchange.frame.message
                outcome = codes.reversal_outcome(answer.text(39, ""))
                self.journal.reversal_closed(due.id, answer, outcome.value)
                if outcome is codes.ReversalOutcome.CONFIRMED:
                    reversed_now += 1
                    log.warning(
                        "reversal of STAN %s: the host had nothing to reverse and has reversed "
                        "it now: the original reached it after the first reversal", stan,
                    )  # fmt: skip
        return reversed_now

    async def _try(self, queued: Reversal, tried: int, repair: Refused | None) -> Exchange:
        """One try of ``queued`` (``tried`` times before): the host's answer if it closes the
        reversal; :class:`_Repairable` for a refusal when ``repair`` can act on it;
        :class:`ReversalPending` otherwise. A failed try is journalled."""
        message = reversal_request(queued.message, queued.reason)
        stan = queued.message.text(11)
        try:
            encoded = await asyncio.to_thread(self.macs.encode, message)
            exchange = await self.link.request(message, encoded)
        except (HostLinkError, ModuleError) as exc:
            self._attempted(queued, str(exc))
            raise ReversalPending(f"STAN {stan}: {exc}", tried + 1) from None
        self.stats.reversals_sent += 1
        answer = exchange.frame.message
        code = answer.text(39, "")
        outcome = codes.reversal_outcome(code)
        done = outcome is not codes.ReversalOutcome.NOT_DONE
        # a forged decline must not close a reversal either: it needs a good MAC too
        mac_ok = done and await asyncio.to_thread(self.macs.response_ok, message, exchange, True)
        if not mac_ok:
            reason = f"host answered {code}" if not done else "response MAC wrong"
            self._attempted(queued, reason)
            if not done and repair is not None and refused(answer):
                raise _Repairable(answer)
            raise ReversalPending(f"STAN {stan}: {reason}", tried + 1)
        if outcome is codes.ReversalOutcome.CONFLICT:
            log.error(
                "reversal of STAN %s closed as a conflict: the host answered 22 "
                "(suspected malfunction); a person must reconcile it",
                stan,
            )
        return exchange

    def _attempted(self, queued: Reversal, reason: str) -> None:
        try:
            self.journal.reversal_attempted(queued.id, reason)
        except JournalError as exc:  # the try is lost from the count, never the reversal
            log.error("reversal of STAN %s: the journal missed a try: %s",
                      queued.message.text(11), exc)  # fmt: skip
