"""What the host's header asks for (processing requirement, DESIGN.md section 4), done in the
background so the answer that carried it goes to the app at once.

Every answer the agent receives feeds one :class:`RequirementQueue` (:class:`Heard` listens on
the link): the app's, the 0810 of the agent's own sign-in, each step of a download chain, the
echo test's. :class:`HostRequests` runs what is queued one at a time, in the order raised; a
requirement raised while another runs waits its turn and is never dropped, so the chains real
hosts use (the sign-in asks 4, the end of the CA keys asks 5, the end of the IC parameters asks
9) complete. A requirement queued or running is not queued twice. One just satisfied is not
acted on again for ``repeat_after`` seconds, however many answers still carry it, except when
the end message of another chain raises it: that is the host chaining, not repeating (chains
that raise each other in a loop stop where they come round). A download
that fails is tried again with exponential back-off and jitter (a fleet must not retry in
lock-step after an outage), ``attempts`` times in all; the next answer that still asks starts it
over. A refusal's sign-in (3) and re-provisioning (6) are recovery's (section 7); what else its
header asks is queued.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.backoff import jittered
from agent.config import SessionConfig
from agent.journal import Journal
from agent.recovery.policy import refused
from agent.wire.frame import Frame
from agent.wire.message import Message
from agent.wire.working_keys import SCHEMES

log = logging.getLogger(__name__)

# The 60.3 code of the message that ends each download chain (section 16), and the requirement
# whose chain it ends: what its answer raises is the host chaining the next download. A sign-in
# is such a chain (3): its 0810 asks 4 when the CA keys changed, within the repeat pause or not.
CHAIN_ENDS = {"360": 1, "362": 2, "371": 4, "381": 5, "394": 9} | dict.fromkeys(SCHEMES, 3)
NETWORK_MANAGEMENT_ANSWERS = ("0810", "0830")
# a sign-in and a re-provisioning, which a refusal's recovery runs itself (under its lock, with
# requests held at its gate): from a refusal's header not queued beside it
RECOVERY_REMEDIES = (3, 6)


@dataclass(frozen=True)
class Action:
    """What the agent does for one processing requirement of the header."""

    what: str  # for the journal and the log
    run: Callable[[], Awaitable[str]]  # returns what it did; raises when it failed
    retried: bool = True  # a sign-in or re-provisioning has its own recovery instead


@dataclass(frozen=True)
class Pacing:
    """How soon a requirement is acted on again and how its failures are retried."""

    repeat_after: float = 600.0
    attempts: int = 5
    first_pause: float = 5.0
    max_pause: float = 600.0

    @classmethod
    def of(cls, session: SessionConfig) -> Pacing:
        return cls(session.repeat_after, session.attempts, session.retry_first, session.retry_max)


class RequirementQueue:
    """The requirements raised and not yet run, in the order raised. Built before the parts
    whose answers feed it; :class:`HostRequests` takes from it."""

    def __init__(self, pacing: Callable[[], Pacing]) -> None:
        """``pacing`` is read at each use: a reload may change ``session.repeat_after``."""
        self.pacing = pacing
        self._queue: collections.deque[int] = collections.deque()
        self._more = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._satisfied: dict[int, float] = {}
        # the chains that led to each requirement queued or running (the chain whose end raised
        # it, the one whose end raised that, ...): a chain raising one of them is a loop
        self._lineage: dict[int, frozenset[int]] = {}
        self.running: int | None = None

    def raised(self, requirement: int, by: str = "") -> None:
        """An answer's header carried ``requirement``; ``by`` is the 60.3 code of the network
        management message it answered, empty for the others."""
        if requirement == 0 or requirement == self.running or requirement in self._queue:
            return
        ended = CHAIN_ENDS.get(by, requirement)
        if ended == requirement:  # not the host chaining: a repeat within the pause waits
            done_at = self._satisfied.get(requirement)
            if done_at is not None and time.monotonic() - done_at < self.pacing().repeat_after:
                return
            lineage: frozenset[int] = frozenset()
        else:
            # the host chaining: never held by the pause, but chains that raise each other
            # stop where they come round (a sign-in whose 0810 asks 4 and the CA keys' end
            # asking 3 ran ~550 sign-ins a second, the journal filling the disk; the header is
            # not MACed: anyone on the line may set it)
            led_to = self._lineage.get(ended, frozenset()) if ended == self.running else None
            lineage = (led_to or frozenset()) | {ended}
            if requirement in lineage:
                log.warning("the host asks for requirement %d from the end of %s, which it led "
                            "to: a loop, not acted on", requirement, by)  # fmt: skip
                return
        self._lineage[requirement] = lineage
        self._queue.append(requirement)
        self._idle.clear()
        self._more.set()

    async def take(self) -> int:
        """The requirement raised first of those waiting (waits for one); it is ``running``
        until :meth:`finished`."""
        while not self._queue:
            self._more.clear()
            await self._more.wait()
        self.running = self._queue.popleft()
        return self.running

    def finished(self) -> None:
        if self.running is not None:
            self._lineage.pop(self.running, None)
        self.running = None
        if not self._queue:
            self._idle.set()

    def satisfied(self, requirement: int) -> None:
        """``requirement`` was done: answers that still carry it are not acted on for a
        while."""
        self._satisfied[requirement] = time.monotonic()

    async def idle(self) -> None:
        """Until nothing is queued or running."""
        await self._idle.wait()


class Heard:
    """What every answer the link matched tells the session: the host's time (``saw``), and
    the processing requirement of its header, queued (a refusal's sign-in and re-provisioning
    are recovery's)."""

    def __init__(self, saw: Callable[[Message], None], queue: RequirementQueue | None) -> None:
        """``queue`` None: nothing the host asks is the agent's to do (pass-through mode,
        where the app keeps its own session)."""
        self._saw = saw
        self._queue = queue

    def __call__(self, frame: Frame) -> None:
        self._saw(frame.message)
        requirement = frame.header.processing_requirement if frame.header else 0
        message = frame.message
        if self._queue is None or requirement == 0:
            return
        if requirement in RECOVERY_REMEDIES and refused(message):  # recovery's remedies (section 7)
            return
        by = ""
        if message.mti in NETWORK_MANAGEMENT_ANSWERS:
            by = str(message.get(60, ""))[8:11]
        self._queue.raised(requirement, by)


class HostRequests:
    """Runs what the queue holds, one at a time, each with its action."""

    def __init__(
        self,
        queue: RequirementQueue,
        actions: dict[int, Action],
        journal: Journal,
        failures: tuple[type[Exception], ...],
    ) -> None:
        self._queue = queue
        self._actions = actions
        self._journal = journal
        self._failures = failures  # what a failed action raises (others are bugs, logged so)
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.ensure_future(self._work())

    async def _work(self) -> None:
        while True:
            requirement = await self._queue.take()
            try:
                if requirement in self._actions:  # 10-15: nothing the agent does for them
                    await self.run(requirement)
            finally:
                self._queue.finished()

    async def run(self, requirement: int) -> bool:
        """Do what ``requirement`` calls for now, with its retries; whether it was done."""
        action = self._actions[requirement]
        pacing = self._queue.pacing()
        self._event("host-asks", requirement=requirement, what=action.what)
        # imported here, by the first thing the host asks for: the service starts without
        # tenacity's modules
        import tenacity

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(pacing.attempts if action.retried else 1),
            wait=jittered(pacing.first_pause, pacing.max_pause),
            retry=tenacity.retry_if_exception_type(self._failures),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    done = await action.run()
        except self._failures as exc:
            log.warning("the host asked for %s, which failed: %s", action.what, exc)
            self._event(
                "host-asks-failed", requirement=requirement, what=action.what, reason=str(exc)
            )
            return False
        except Exception:  # a bug must not end the queue's task
            log.exception("the host asked for %s; the agent failed doing it", action.what)
            return False
        self._queue.satisfied(requirement)
        log.info("the host asked for %s: %s", action.what, done)
        return True

    def _event(self, kind: str, **detail: object) -> None:
        self._journal.note(kind, **detail)

    async def idle(self) -> None:
        """Until nothing the host asked for is queued or running (tests use it)."""
        await self._queue.idle()

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
