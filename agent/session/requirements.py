"""What the host's header asks for (processing requirement, DESIGN.md section 4), done in the
background so the answer that carried it goes to the app at once.

One run per requirement at a time. A requirement just satisfied is not acted on again for
``repeat_after`` seconds, however many answers still carry it. A download that fails is tried
again with exponential back-off and jitter (a fleet must not retry in lock-step after an outage),
``attempts`` times in all; the next answer that still asks starts it over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import tenacity

from agent.backoff import jittered
from agent.journal import Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Action:
    what: str  # for the journal and the log
    run: Callable[[], Awaitable[str]]  # returns what it did; raises when it failed
    retried: bool = True  # a sign-in or re-provisioning has its own recovery instead


@dataclass(frozen=True)
class Pacing:
    repeat_after: float = 600.0
    attempts: int = 5
    first_pause: float = 5.0
    max_pause: float = 600.0


class HostRequests:
    def __init__(
        self,
        actions: dict[int, Action],
        journal: Journal,
        pacing: Callable[[], Pacing],
        failures: tuple[type[Exception], ...],
    ) -> None:
        self._actions = actions
        self._journal = journal
        self._pacing = pacing
        self._failures = failures  # what a failed action raises (others are bugs, logged so)
        self._running: dict[int, asyncio.Task[None]] = {}
        self._satisfied: dict[int, float] = {}

    def asked(self, requirement: int) -> None:
        """The host's header carried ``requirement``: act on it unless just done or running."""
        action = self._actions.get(requirement)
        if action is None or requirement in self._running:
            return
        done_at = self._satisfied.get(requirement)
        if done_at is not None and time.monotonic() - done_at < self._pacing().repeat_after:
            return
        task = asyncio.ensure_future(self.run(requirement))
        self._running[requirement] = task
        task.add_done_callback(lambda _: self._running.pop(requirement, None))

    async def run(self, requirement: int) -> None:
        action = self._actions[requirement]
        pacing = self._pacing()
        self._event("host-asks", requirement=requirement, what=action.what)
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
            return
        except Exception:  # a bug must not kill the service's event loop task silently
            log.exception("the host asked for %s; the agent failed doing it", action.what)
            return
        self._satisfied[requirement] = time.monotonic()
        log.info("the host asked for %s: %s", action.what, done)

    def _event(self, kind: str, **detail: object) -> None:
        self._journal.note(kind, **detail)

    async def idle(self) -> None:
        """Until nothing the host asked for is running (tests use it to see the outcome)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
