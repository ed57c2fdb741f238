"""The STAN map of wrap mode (DESIGN.md section 10): the app numbers its requests, the agent
numbers what goes on the wire, and the journal keeps both per batch. References to earlier
requests are translated from the app's numbers to the wire's, and a request the app repeats
within ``gateway.replay_window`` gets its first answer again instead of a second charge."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from agent.journal import Journal, JournalError
from agent.transaction.classes import MessageClass
from agent.transaction.reversals import ReversalPending, ReversalSender
from agent.wire.builders import with_batch
from agent.wire.message import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalAnswer:
    """The agent answers the request itself: with ``code``, for ``reason``."""

    code: str
    reason: str


def replay_key(request: Message) -> str:
    """What a repetition of ``request`` has the same (DESIGN.md section 10): MTI, processing
    code and amount (with the app's STAN and the batch, which the journal keeps beside it)."""
    return f"{request.mti}/{request.get(3) or ''}/{request.get(4) or ''}"


class StanMap:
    def __init__(
        self, journal: Journal, reversals: ReversalSender, replay_window: Callable[[], float]
    ) -> None:
        """``replay_window`` is read at each use: a reload may change it."""
        self.journal = journal
        self.reversals = reversals
        self._replay_window = replay_window

    async def references(self, request: Message, cls: MessageClass) -> dict[int, str] | LocalAnswer:
        """Fields that name earlier requests by the app's STAN, in the wire's numbers: 11 of a
        reversal or batch upload (the original's, and a reversal's 60.2 the original's batch),
        61.1/61.2 of any request. A reversal of nothing the agent sent, or of a request the
        agent reverses itself, is answered here: the host must not see it twice."""
        found: dict[int, str] = {}
        original = request.get(61)
        if isinstance(original, str) and len(original) >= 12:
            wire = self.journal.wire_stan(original[6:12], original[:6])
            wire = wire or self.journal.wire_stan(original[6:12])
            if wire is not None:
                found[61] = wire[1] + wire[0] + original[12:]
        if not cls.refers_by_stan:
            return found
        stan = request.get(11)
        wire = self.journal.wire_stan(stan) if isinstance(stan, str) else None
        if wire is None:
            reason = f"no request of STAN {stan} went through the agent"
            return LocalAnswer("25", reason)
        found[11] = wire[0]
        if cls.name != "reversal":
            return found
        field_60 = request.get(60)
        if isinstance(field_60, str):
            found[60] = with_batch(field_60, int(wire[1]))
        if self.journal.reversal_of(*wire) == "queued":
            try:
                await self.reversals.send()
            except ReversalPending as exc:
                return LocalAnswer("96", f"its reversal is pending: {exc}")
        state = self.journal.reversal_of(*wire)
        if state == "confirmed":
            return LocalAnswer("00", "reversed by the agent")
        if state == "conflict":
            return LocalAnswer("22", "the host disputes its reversal")
        return found

    def replayed(self, request: Message) -> Message | None:
        """The answer the app already got for this very request (same app STAN, MTI,
        processing code and amount, within ``gateway.replay_window`` in this batch): the app
        repeats it, and it must not be charged twice."""
        stan = request.get(11)
        if not isinstance(stan, str):
            return None
        window = self._replay_window()
        try:
            answer = self.journal.replay(stan, replay_key(request), window)
        except JournalError as exc:
            log.error("cannot look for a repetition of STAN %s: %s", stan, exc)
            return None
        if answer is None:
            return None
        if 2 in request:  # the host echoed the card number, which the journal does not keep
            answer.fields[2] = request.fields[2]
        answer = Message(answer.mti, dict(sorted(answer.fields.items())))
        log.warning("app STAN %s repeated within %g s: the first answer again", stan, window)
        with contextlib.suppress(JournalError):
            self.journal.event("replayed", app_stan=stan, mti=request.mti, code=answer.get(39))
        return answer
