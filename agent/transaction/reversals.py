"""The reversal queue (DESIGN.md section 8): what the journal queued is sent before the next
financial request and until the host closes it. An approval confirms a reversal, 12 and 25 close
it (nothing to reverse; with or without a MAC, as hosts MAC approvals, not declines), 22 closes
it as a conflict a person must reconcile (without a MAC, or with one that verifies). One the host
will not close does not keep the others from being sent.

Reversals go in two lanes. A fresh one (tried fewer than ``reversal.attempts`` times) goes before
the next sale: the sale joins the try under way or starts one, so it waits for at most one
bounded try, never behind other sales' tries. A stuck one (tried that often) is the background
sender's alone, with back-off: no sale waits for it.

A reversal closed with 12 or 25 (or 22 without a MAC) may have overtaken its original: a request
stuck in a host that stopped reading reaches it after the reversal went through the backup, and
is approved there with nobody left to read the answer. So it is sent once more, in the background,
``reversal.recheck_after`` seconds later; sales never wait for that recheck.

An answer that matches no request in flight comes here too (:meth:`ReversalSender.late_response`):
it moves money only when it is authenticated (its MAC verifies), names this terminal and
answers the original's MTI; and never while its request still waits for its own answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine

from agent.backoff import pause
from agent.blocking import patiently
from agent.host.link import Exchange, HostLink, HostLinkError
from agent.journal import SALE_PATIENCE, Journal, JournalError, Reversal
from agent.recovery.policy import refused
from agent.transaction.deferred import DeferredWrites
from agent.transaction.macs import Macs
from agent.transaction.stats import GatewayStats
from agent.wire import codes
from agent.wire.builders import response_mti, reversal_request
from agent.wire.errors import WireError
from agent.wire.message import Message
from drivers.module import ModuleError

log = logging.getLogger(__name__)


class ReversalPending(Exception):
    """A queued reversal could not be closed yet; ``attempts`` is how many tries it has had;
    ``unanswered``: the host gave no answer (or could not be reached)."""

    def __init__(self, message: str, attempts: int, *, unanswered: bool = False) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.unanswered = unanswered


class ReversalRefused(Exception):
    """The host refused a reversal with a code recovery can act on (it lost the session or
    the keys): whoever sent it runs recovery, then the reversal goes again."""

    def __init__(self, stan: str, exchange: Exchange) -> None:
        self.exchange = exchange
        self.answer = exchange.frame.message
        code = self.answer.text(39, "")
        super().__init__(f"the host refused the reversal of STAN {stan} with {code}")


def _holding(
    failures: list[ReversalPending | ReversalRefused], limit: int, untried: int
) -> ReversalPending | ReversalRefused:
    """Of a pass's failures, the one a sale answers to: the first refusal (recovery acts) or
    reversal still short of ``limit`` tries (it holds sales); else, when a silent host left
    reversals untried, their silence (they hold sales too: none has had its tries); else the
    first failure, past its tries (sales go on)."""
    for failure in failures:
        if isinstance(failure, ReversalRefused) or failure.attempts < limit:
            return failure
    if untried:
        return ReversalPending(
            f"{failures[-1]}; {untried} more reversal(s) not tried", 0, unanswered=True
        )
    return failures[0]


class ReversalSender:
    def __init__(
        self,
        journal: Journal,
        link: HostLink,
        macs: Macs,
        stats: GatewayStats,
        deferred: DeferredWrites,
        *,
        recheck_after: Callable[[], float],
        attempts: Callable[[], int],
    ) -> None:
        """``recheck_after`` and ``attempts`` are read at each use: a reload may change
        them."""
        self.journal = journal
        self._recheck_after = recheck_after
        self._attempts = attempts
        self.deferred = deferred
        self.link = link
        self.macs = macs
        self.stats = stats
        self.waiting = asyncio.Event()  # set when the journal has queued reversals
        self._fresh_lane = asyncio.Lock()
        self._stuck_lane = asyncio.Lock()
        self._fresh_try: asyncio.Future[int] | None = None  # the fresh lane's try under way
        # reversals the host closed whose outcome the journal could not take (a full disk):
        # kept here, never sent again, written when the journal takes writes again
        self._unwritten: dict[int, tuple[Message, str]] = {}
        # authenticated late approvals of requests still waiting for their own answer
        self._early: dict[int, Message] = {}
        self._judging: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in list(self._judging):
            task.cancel()
        await asyncio.gather(*self._judging, return_exceptions=True)

    # ------------------------------------------------------------------ unmatched answers

    def late_response(self, exchange: Exchange, earlier: Exchange | None) -> None:
        """The link's sink for responses nobody waited for. An approval of a reversible request
        that was answered otherwise (refused, timed out, answered locally) is reversed, once it
        proves to be the host's: a second approval of an approved request is no charge."""
        response = exchange.frame.message
        if not codes.approved(response.text(39, "")):
            return
        if earlier is not None and codes.approved(earlier.frame.message.text(39, "")):
            return
        self._spawn(self._judge(exchange))

    def _spawn(self, judging: Coroutine[None, None, None]) -> None:
        task = asyncio.ensure_future(judging)
        self._judging.add(task)
        task.add_done_callback(self._judging.discard)

    async def _judge(self, exchange: Exchange) -> None:
        response = exchange.frame.message
        stan = response.text(11, "")
        try:
            journal = self.journal
            sent = await journal.run(journal.sent_with_stan, stan)
            named = (response.text(41, "").strip(), response.text(42, "").strip())
            refusal = None
            if sent is None or response_mti(sent.mti) != response.mti:
                refusal = "it answers no reversible request the agent sent"
            elif named != sent.terminal:
                # the TID and MID its request went with: a re-provisioning since may have
                # changed the terminal's, and the approval under the old ones is still money
                refusal = f"it names TID/MID {named[0]!r}/{named[1]!r}, not its request's"
            if refusal is None and not await asyncio.to_thread(self.macs.authentic, exchange):
                assert sent is not None
                # MACed under the keys in use when it was sent, which a sign-in has replaced
                # since: it cannot be checked, and reversing a request answered otherwise is
                # safe (25 at worst), where leaving a real one would charge twice
                if not sent.keys_changed:
                    refusal = "its MAC does not verify under the session's key"
            if refusal is not None:
                log.warning("unmatched approval for STAN %s ignored: %s", stan, refusal)
                journal.note("stray-answer", stan=stan, mti=response.mti, why=refusal)
                return
            assert sent is not None
            # kept first, then the state read again: a request still pending is decided when
            # its own answer (or timeout) settles it, and settled() may come during the read
            self._early[sent.id] = response
            again = await journal.run(journal.sent_with_stan, stan)
            if again is not None and again.id == sent.id and again.state == "pending":
                return  # settled() judges it
            if self._early.pop(sent.id, None) is None:
                return  # settled() took it meanwhile
            if again is not None and again.id == sent.id:
                await self._reverse_late(sent.id, response)
        except JournalError as exc:
            log.error("unmatched approval for STAN %s not judged: %s", stan, exc)
        except Exception:
            log.exception("unmatched approval for STAN %s not judged", stan)

    def held_approval(self, transaction_id: int) -> Message | None:
        """The authenticated late approval that came for ``transaction_id`` while it waited,
        if one did (any thread may ask: a dict lookup)."""
        return self._early.get(transaction_id)

    def settled(self, transaction_id: int) -> None:
        """The request ``transaction_id`` has its outcome in the journal: an authenticated
        approval that came for it while it waited is judged now."""
        response = self._early.pop(transaction_id, None)
        if response is not None:
            self._spawn(self._reverse_late(transaction_id, response))

    async def _reverse_late(self, transaction_id: int, response: Message) -> None:
        queued = await self.deferred.now_or_later(
            f"the reversal of a late approval (STAN {response.text(11, '')})",
            lambda: self.journal.reverse_late_approval(transaction_id, response),
        )
        if queued is not None:
            log.warning(
                "late approval for STAN %s, whose request was answered otherwise: reversing it",
                response.text(11, ""),
            )
            self.waiting.set()

    # ------------------------------------------------------------------------- sending

    async def before_sale(self) -> int:
        """Before a financial request: the fresh reversals go first. Joins the try under way,
        or starts one; returns how many it closed, raises :class:`ReversalPending` when one
        could not be closed (:class:`ReversalRefused` when recovery must act first), or when
        the try has not ended within each queued reversal's host answer time and the journal's
        patience (a frozen disk, a host slower than its timeout: it goes on, never cancelled,
        and the sale gets its answer; DESIGN.md section 8, "at most one bounded try")."""
        if self._fresh_try is None or self._fresh_try.done():
            self._fresh_try = asyncio.ensure_future(self._send_lane(stuck=False))
            self._fresh_try.add_done_callback(_retrieved)
        tries = max(self.journal.queued_reversals_count, 1)
        patience = tries * self.link.options.response_timeout + SALE_PATIENCE
        try:
            return await patiently(self._fresh_try, patience)
        except TimeoutError:
            raise ReversalPending(
                f"the reversals queued before it did not end within {patience:g} s (their "
                "tries and the journal's patience: the host is slow, or the disk frozen); they "
                "go on",
                0,
            ) from None

    async def send(self) -> int:
        """Send every queued reversal, fresh ones first, then stuck ones; returns how many were
        closed. Raises :class:`ReversalPending` (:class:`ReversalRefused`) for the first that
        could not be closed, once the others were tried, a journal that cannot be read or
        written included: the caller always has an answer to give."""
        try:
            fresh = await self.before_sale()
        except (ReversalPending, ReversalRefused) as exc:
            if not (isinstance(exc, ReversalPending) and exc.unanswered):
                with contextlib.suppress(ReversalPending, ReversalRefused):
                    await self._send_lane(stuck=True)  # the stuck ones are not held up by it
            raise
        return fresh + await self._send_lane(stuck=True)

    async def _send_lane(self, *, stuck: bool) -> int:
        closed = 0
        limit = self._attempts()
        async with self._stuck_lane if stuck else self._fresh_lane:
            try:
                await self.deferred.flush()
                await self._write_outcomes()
                queued = await self.journal.run(self.journal.queued_reversals)
                queued_now = [r for r in queued if (r.attempts >= limit) == stuck]
            except JournalError as exc:
                raise ReversalPending(f"journal: {exc}", 0) from None
            failures: list[ReversalPending | ReversalRefused] = []
            untried = 0
            for position, queued in enumerate(queued_now):
                if queued.id in self._unwritten:
                    continue  # closed by the host already; only the journal lags behind
                try:
                    exchange = await self._try(queued, repairable=True)
                except (ReversalPending, ReversalRefused) as exc:
                    # one the host will not close must not keep the others from it (a 97 to
                    # a reversal made under a TID re-provisioned since, a 30 to one the profile
                    # changed); a host that did not answer one will not answer the next either
                    failures.append(exc)
                    if isinstance(exc, ReversalPending) and exc.unanswered:
                        untried = sum(  # those the host closed already are done
                            r.id not in self._unwritten for r in queued_now[position + 1 :]
                        )
                        break
                    continue
                answer = exchange.frame.message
                outcome = codes.reversal_outcome(answer.text(39, "")).value
                self._unwritten[queued.id] = (answer, outcome)
                closed += 1
                try:
                    await self._write_outcomes()
                except JournalError as exc:
                    log.error(
                        "reversal of STAN %s closed by the host (%s); the journal cannot take "
                        "it yet, kept in memory: %s", queued.message.text(11), outcome, exc,
                    )  # fmt: skip
            if failures:
                raise _holding(failures, limit, untried)
        return closed

    async def _write_outcomes(self) -> None:
        journal = self.journal
        for reversal_id, (answer, outcome) in list(self._unwritten.items()):
            recheck = self._recheck_after()
            await journal.run(journal.reversal_closed, reversal_id, answer, outcome, recheck)
            del self._unwritten[reversal_id]

    async def recheck(self) -> int:
        """Send once more each reversal closed as "nothing to reverse" whose recheck is due;
        returns how many the host then reversed after all. One without a closing answer goes
        again later, with the agent's back-off from one recheck period."""
        reversed_now = 0
        journal = self.journal
        async with self._stuck_lane:
            for due in await journal.run(journal.reversals_to_recheck):
                stan = due.message.text(11)
                try:
                    exchange = await self._try(due, repairable=False)
                except ReversalPending as exc:
                    log.warning("recheck of the reversal of STAN %s: %s; again later", stan, exc)
                    period = self._recheck_after()
                    later = pause(period, period * 8, due.attempts)  # tries of this reversal
                    await journal.run(journal.postpone_recheck, due.id, later)
                    continue
                answer = exchange.frame.message
                outcome = codes.reversal_outcome(answer.text(39, ""))
                await journal.run(journal.reversal_closed, due.id, answer, outcome.value)
                if outcome is codes.ReversalOutcome.CONFIRMED:
                    reversed_now += 1
                    log.warning(
                        "reversal of STAN %s: the host had nothing to reverse and has reversed "
                        "it now: the original reached it after the first reversal", stan,
                    )  # fmt: skip
        return reversed_now

    async def _try(self, queued: Reversal, *, repairable: bool) -> Exchange:
        """One try of ``queued``: the host's answer if it closes the
        reversal; :class:`ReversalRefused` for a refusal recovery can act on (when
        ``repairable``); :class:`ReversalPending` otherwise. A failed try is journalled."""
        stan = queued.message.text(11)
        try:
            message = reversal_request(queued.message, queued.reason)
            encoded = await asyncio.to_thread(self.macs.encode, message)
            exchange = await self.link.request(message, encoded)
        except (HostLinkError, ModuleError, WireError) as exc:
            # a reversal the profile in use cannot carry (changed since it was queued) fails
            # its tries too: past reversal.attempts it no longer holds sales up
            await self._attempted(queued, str(exc))
            unanswered = isinstance(exc, HostLinkError)
            raise ReversalPending(
                f"STAN {stan}: {exc}", queued.attempts + 1, unanswered=unanswered
            ) from None
        self.stats.reversals_sent += 1
        answer = exchange.frame.message
        code = answer.text(39, "")
        outcome = codes.reversal_outcome(code)
        if outcome is codes.ReversalOutcome.NOT_DONE:
            await self._attempted(queued, f"host answered {code}")
            if repairable and refused(answer):
                raise ReversalRefused(stan, exchange)
            raise ReversalPending(f"STAN {stan}: host answered {code}", queued.attempts + 1)
        # 12 and 25 close it with or without a MAC, and so does a 22 without one (hosts MAC
        # approvals, not declines: the conflict goes to a person), each sent once more later
        # (the recheck); a confirmation must be the host's (a forged one would end a reversal
        # never made), and so must a 22 that carries a MAC
        checked = outcome is codes.ReversalOutcome.CONFIRMED or (
            outcome is codes.ReversalOutcome.CONFLICT and 64 in answer
        )
        if checked and not await asyncio.to_thread(self.macs.response_ok, message, exchange, True):
            await self._attempted(queued, "response MAC wrong")
            raise ReversalPending(f"STAN {stan}: response MAC wrong", queued.attempts + 1)
        if outcome is codes.ReversalOutcome.CONFLICT:
            log.error(
                "reversal of STAN %s closed as a conflict: the host answered 22 "
                "(suspected malfunction); a person must reconcile it",
                stan,
            )
        return exchange

    async def _attempted(self, queued: Reversal, reason: str) -> None:
        try:
            await self.journal.run(self.journal.reversal_attempted, queued.id, reason)
        except JournalError as exc:  # the try is lost from the count, never the reversal
            log.error("reversal of STAN %s: the journal missed a try: %s",
                      queued.message.text(11), exc)  # fmt: skip


def _retrieved(future: asyncio.Future[int]) -> None:
    """A shared try's failure is each joiner's to handle; none left must not be logged."""
    if not future.cancelled():
        future.exception()
