"""The STAN map of wrap mode (DESIGN.md section 10): the app numbers its requests, the agent
numbers what goes on the wire, and the journal keeps both per batch. References to earlier
requests are translated from the app's numbers to the wire's, and a request the app repeats
within ``gateway.replay_window`` gets its first answer again instead of a second charge."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

try:  # the digest alone: hashlib would load OpenSSL (3.7 MB) for it
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import blake2b

from agent.journal import SALE_PATIENCE, Journal, JournalError
from agent.session.tlv import TlvError, parse
from agent.transaction.classes import MessageClass
from agent.transaction.reversals import ReversalPending, ReversalRefused, ReversalSender
from agent.wire.builders import Terminal, with_batch
from agent.wire.message import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalAnswer:
    """The agent answers the request itself: with ``code``, for ``reason`` (of the finding
    ``finding``)."""

    code: str
    finding: str
    reason: str


NO_BATCH = "000000"  # an app that does not know the host's batch names none
RECORDED_KEPT = 4096  # app STANs remembered before the older than the window are dropped


def card_number(request: Message) -> bytes:
    """The card a request charges: the PAN of field 2, else track 2 up to its separator (all of
    it when encrypted: 53.3 = 1), else 5A of the IC data in 55."""
    pan = request.get(2)
    if isinstance(pan, str) and pan:
        return pan.encode()
    track = request.get(35)
    if isinstance(track, str) and track:
        security = request.get(53)
        if isinstance(security, str) and security[2:3] == "1":  # encrypted under the TDK (53.3)
            return track.upper().encode()  # any nibble: no separator to cut at
        return track.upper().replace("D", "=").split("=")[0].encode()
    icc = request.get(55)
    if isinstance(icc, bytes):
        with contextlib.suppress(TlvError):
            for tag, value in parse(icc):
                if tag == "5A":
                    return value.hex().upper().rstrip("F").encode()
    return b""


def replay_key(request: Message, terminal: Terminal, secret: bytes) -> str:
    """What a repetition of ``request`` has the same (DESIGN.md section 10): MTI, processing
    code, amount, 25, 60.1, TID/MID and the card, as a keyed digest (the app's STAN and the
    batch are kept beside it). The card number itself is never kept."""
    field_60 = request.get(60)
    parts = (
        request.mti,
        request.get(3) or "",
        request.get(4) or "",
        request.get(25) or "",
        field_60[:2] if isinstance(field_60, str) else "",
        terminal.tid,
        terminal.mid,
    )
    digest = blake2b("|".join(map(str, parts)).encode() + b"|" + card_number(request), key=secret)
    return digest.hexdigest()[:32]


class StanMap:
    def __init__(
        self, journal: Journal, reversals: ReversalSender, replay_window: Callable[[], float]
    ) -> None:
        """``replay_window`` is read at each use: a reload may change it."""
        self.journal = journal
        self.reversals = reversals
        self._replay_window = replay_window
        # answers withdrawn while the journal could not record their reversal yet (full disk):
        # transaction -> when (monotonic), in that order; forgotten once out of the window,
        # where no repetition can reach them
        self._withdrawn: dict[int, float] = {}
        # app STAN -> when a request of it was last recorded (monotonic): a STAN not in it
        # cannot be a repetition, and needs no look into the journal (a thread hop on every
        # sale's path). Complete from _complete_since on: before it (further back than the
        # window at start, or what a pruning dropped) only the journal knows.
        self._recorded: dict[str, float] = {}
        self._prune_above = RECORDED_KEPT  # doubles when what is kept is all still recent
        self._complete_since = math.inf  # until the journal has said (the first look)

    async def references(self, request: Message, cls: MessageClass) -> dict[int, str] | LocalAnswer:
        """Fields that name earlier requests by the app's STAN, in the wire's numbers: 11 of a
        reversal or batch upload (the original's, and a reversal's 60.2 the original's batch),
        61.1/61.2 of any request, each within the batch the reference names (61.1, a
        reversal's 60.2, else the current batch). A reference that cannot be translated there
        is answered 25: an app's number never reaches the host as a wire number. A reversal
        of a request the agent reverses itself is answered here: the host must not see it
        twice."""
        found: dict[int, str] = {}
        original = request.get(61)
        if original is not None:
            text = original if isinstance(original, str) else ""
            if len(text) < 12:
                reason = f"61 ({text!r}) names no batch and STAN of 6 digits"
                return LocalAnswer("25", "request.original-unknown", reason)
            batch = None if text[:6] == NO_BATCH else text[:6]
            wire = await self.journal.within(
                SALE_PATIENCE, self.journal.wire_stan, text[6:12], batch
            )
            if wire is None:
                where = f"batch {batch}" if batch else "the current batch"
                reason = f"no request of STAN {text[6:12]} in {where} went through the agent"
                return LocalAnswer("25", "request.original-unknown", reason)
            found[61] = wire[1] + wire[0] + text[12:]
        if not cls.refers_by_stan:
            return found
        stan = request.get(11)
        # a reversal's 60.2 names its original's batch (a sign-in may have brought another
        # since); a batch upload's is the batch being uploaded, the current one
        named = None
        field_60 = request.get(60)
        if cls.name == "reversal" and isinstance(field_60, str) and len(field_60) >= 8:
            named = None if field_60[2:8] == NO_BATCH else field_60[2:8]
        wire = None
        if isinstance(stan, str):
            wire = await self.journal.within(SALE_PATIENCE, self.journal.wire_stan, stan, named)
        if wire is None:
            where = f"batch {named}" if named else "the current batch"
            reason = f"no request of STAN {stan} in {where} went through the agent"
            return LocalAnswer("25", "request.original-unknown", reason)
        found[11] = wire[0]
        if cls.name != "reversal":
            return found
        if isinstance(field_60, str):
            found[60] = with_batch(field_60, int(wire[1]))
        if await self.journal.within(SALE_PATIENCE, self.journal.reversal_of, *wire) == "queued":
            try:
                await self.reversals.before_sale()
            except (ReversalPending, ReversalRefused) as exc:
                reason = f"its reversal is pending: {exc}"
                return LocalAnswer("96", "request.original-reversal-pending", reason)
        state = await self.journal.within(SALE_PATIENCE, self.journal.reversal_of, *wire)
        if state == "confirmed":
            return LocalAnswer("00", "request.original-reversed", "reversed by the agent")
        if state == "conflict":
            reason = "the host disputes its reversal"
            return LocalAnswer("22", "request.original-reversal-disputed", reason)
        if state == "nothing-to-reverse":  # the agent checks again later, by itself
            reason = "the host had no such transaction when the agent reversed it"
            return LocalAnswer("25", "request.original-not-at-host", reason)
        if state == "queued":  # one that keeps failing: sales no longer wait for it
            reason = "the agent's own reversal of it keeps failing and is still being sent"
            return LocalAnswer("96", "request.original-reversal-pending", reason)
        # the app reverses it: from now on a repetition of it is a new request
        await self.journal.within(
            SALE_PATIENCE, self.journal.no_longer_replayable, *wire, why="the app sent its reversal"
        )
        return found

    def withdraw(self, transaction: int) -> None:
        """The answer to ``transaction`` is being reversed: never replayed, whatever the
        journal still says."""
        now = time.monotonic()
        self._withdrawn.pop(transaction, None)
        self._withdrawn[transaction] = now
        cutoff = now - self._replay_window()
        while (oldest := next(iter(self._withdrawn.items())))[1] < cutoff:
            del self._withdrawn[oldest[0]]

    async def unanswered_try(self, request: Message, terminal: Terminal) -> str:
        """The wire STAN a repetition of this very request goes again under (its try the host
        may have taken, whose answer the app did not get), or "". Raises :class:`JournalError`
        when the journal cannot say: a repeat sent as a new transaction would be booked
        twice."""
        stan = request.get(11)
        window = self._replay_window()
        if not isinstance(stan, str) or not self._may_repeat(stan, window):
            return ""
        key = self.key(request, terminal)
        found = await self.journal.within(
            SALE_PATIENCE, lambda: self.journal.unanswered_try(stan, key, window)
        )
        return found or ""

    def key(self, request: Message, terminal: Terminal) -> str:
        return replay_key(request, terminal, self.journal.replay_secret)

    async def _remember_recent(self) -> None:
        """Once, at the first request that could be a repetition: the STANs the journal
        recorded within the window (before a restart too), after which the map is complete. A
        journal that cannot say now is asked again next time."""
        window = self._replay_window()
        try:
            recent = await self.journal.within(SALE_PATIENCE, self.journal.recent_app_stans, window)
        except JournalError as exc:
            log.warning("the recent app STANs cannot be read (%s): repetitions are looked up", exc)
            return
        now = time.monotonic()
        # what was recorded meanwhile (not in the journal's answer) is kept too
        self._recorded = {**{stan: now - age for stan, age in recent}, **self._recorded}
        self._complete_since = now - window

    def recorded(self, app_stan: str) -> None:
        """A request of ``app_stan`` is in the journal now, with its replay key (called from
        the thread that records it, before its answer can exist)."""
        now = time.monotonic()
        self._recorded[app_stan] = now
        if len(self._recorded) > self._prune_above:
            cutoff = now - self._replay_window()
            # a new dict swapped in whole: the event loop's lookups never see one half-pruned
            self._recorded = {s: at for s, at in self._recorded.items() if at >= cutoff}
            self._complete_since = max(self._complete_since, cutoff)
            # pruned again only once it has doubled: never a pass over it on every sale
            self._prune_above = max(RECORDED_KEPT, 2 * len(self._recorded))

    def _may_repeat(self, stan: str, window: float) -> bool:
        """Whether the journal may hold an answer to replay for ``stan``: only if this agent
        recorded a request of that STAN within the window, unless the window reaches back to
        before what it knows (a restart, a longer window after a reload)."""
        now = time.monotonic()
        if now - window < self._complete_since:
            return True
        at = self._recorded.get(stan)
        return at is not None and at >= now - window

    async def replayed(self, request: Message, terminal: Terminal) -> Message | None:
        """The answer the app already got for this very request (same app STAN and replay key,
        within ``gateway.replay_window`` in this batch), if it is still true: the app repeats
        it, and it must not be charged twice. Raises :class:`JournalError` when the journal
        cannot say: a repetition taken for a new request would be charged twice."""
        stan = request.get(11)
        if not isinstance(stan, str):
            return None
        window = self._replay_window()
        if self._complete_since == math.inf:
            await self._remember_recent()
        if not self._may_repeat(stan, window):
            return None  # a STAN this agent has not recorded lately: nothing to replay
        found = await self.journal.within(
            SALE_PATIENCE, lambda: self.journal.replay(stan, self.key(request, terminal), window)
        )
        if found is None or found[0] in self._withdrawn:
            return None
        answer = found[1]
        if 2 in request:  # the host echoed the card number, which the journal does not keep
            answer.fields[2] = request.fields[2]
        answer = Message(answer.mti, dict(sorted(answer.fields.items())))
        log.warning("app STAN %s repeated within %g s: the first answer again", stan, window)
        self.journal.note("replayed", app_stan=stan, mti=request.mti, code=answer.get(39))
        return answer
