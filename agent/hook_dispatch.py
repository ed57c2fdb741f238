"""How the agent tells the firmware hooks (DESIGN.md section 9): in the background and in the
order the events happened when it only informs them (a hook never holds up a payment or a
recovery, and a display-message must never overtake the one it replaces), or within a budget
when a remedy waits for what they did. An informed hook that says try later (exit 75) is told
again, with back-off, a few times; unless a newer event of its kind has replaced what it was
told (a display-message, the unregistered state, a sign-in). A remedy's hooks are asked again
by the remedy's own retries. The hooks directory and timeout are the configuration's in effect:
a reload changes them."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.backoff import Backoff
from agent.config import Config, HooksConfig
from agent.journal import Journal

if TYPE_CHECKING:
    from firmware_hooks import HookResult, HookRunner

log = logging.getLogger(__name__)

# An informed hook that says try later is told again after these pauses (doubling, with
# jitter), at most so many times.
AGAIN_FIRST, AGAIN_LONGEST, AGAIN_TIMES = 5.0, 300.0, 5
# Events whose newest one replaces what the older ones said: an older one is not told again.
REPLACED_BY_NEWER = frozenset({"display-message", "on-unregistered", "signed-in"})


def hook_runner(hooks: HooksConfig) -> HookRunner:
    """The runner of the configured hooks: executables under ``hooks.directory`` and Python
    entry points; an empty directory means no hooks at all (DESIGN.md section 9)."""
    # imported by the first use: a service whose hooks never run starts without its modules
    from firmware_hooks import HookRunner

    return HookRunner(hooks.directory, timeout=hooks.timeout, entry_points=bool(hooks.directory))


class HookDispatch:
    def __init__(self, settings: Callable[[], Config], journal: Journal | None) -> None:
        """``journal`` None: refusals are logged only (a technician's ``agent selftest``, whose
        journal is the service's, read-only)."""
        self._settings = settings
        self._journal = journal
        self._runner: tuple[object, HookRunner] | None = None  # (the hooks settings, runner)
        self._tasks: set[asyncio.Future[None]] = set()
        self._in_order = asyncio.Lock()
        self._told: dict[str, int] = {}  # how many of each event were told: the newest's number
        self._declared: bool | None = None  # whether entry-point hooks may be installed

    def hooks_for(self, event: str) -> list[str]:
        return self.runner.hooks_for(event)

    @property
    def runner(self) -> HookRunner:
        hooks = self._settings().hooks
        if self._runner is None or self._runner[0] != hooks:
            self._runner = (hooks, hook_runner(hooks))
        return self._runner[1]

    def _none_for(self, event: str) -> bool:
        """Whether no hook of ``event`` can exist: no executable in its folder, and no installed
        distribution that may declare an entry point (looked for once). Then the runner is not
        loaded (0.2 MB that would stay in the service for good, and the entry points' child
        process): the start's sign-in tells the ``signed-in`` hooks on every terminal."""
        directory = self._settings().hooks.directory
        if not directory:  # no hooks at all, entry points neither (DESIGN.md section 9)
            return True
        try:
            with os.scandir(Path(directory) / event) as found:
                if next(found, None) is not None:
                    return False
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError:
            return False  # the runner says what is wrong with the folder
        if self._declared is None:
            from firmware_hooks.declared import may_declare

            self._declared = may_declare(sys.path)
        return not self._declared

    @property
    def timeout(self) -> float:
        return self._settings().hooks.timeout

    def tell(self, event: str, payload: dict[str, Any]) -> None:
        """Tell the hooks of ``event`` in the background, after those told before."""
        self._told[event] = number = self._told.get(event, 0) + 1
        task = asyncio.ensure_future(self._tell(event, payload, number))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def told(self) -> None:
        """Until the hooks told so far have finished (tests use it to see what they did)."""
        while self._tasks:
            told = list(self._tasks)
            await asyncio.gather(*told, return_exceptions=True)
            # dropped here, not left to their done callbacks: a gather of tasks already done
            # returns without yielding to the loop (Python 3.12), which would never run them
            self._tasks.difference_update(told)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()  # a hook still running is killed with its process group
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _tell(self, event: str, payload: dict[str, Any], number: int) -> None:
        try:
            later = await self._in_turn(event, payload, None)
            again = Backoff(AGAIN_FIRST, AGAIN_LONGEST)
            while later and again.failures < AGAIN_TIMES:
                await asyncio.sleep(again.failed())
                if event in REPLACED_BY_NEWER and self._told[event] != number:
                    return
                later = await self._in_turn(event, payload, later)
        except Exception:  # a hook runner bug must not surface in a payment's task
            log.exception("running the %s hooks failed", event)

    async def _in_turn(
        self, event: str, payload: dict[str, Any], only: list[str] | None
    ) -> list[str]:
        """Run the hooks of ``event`` (``only`` those named) after those told before; the
        names of those that said try later."""
        async with self._in_order:
            results = await self.ask(event, payload, budget=None, only=only)
        return [r.hook for r in results if r.tries_later]

    async def ask(
        self,
        event: str,
        payload: dict[str, Any],
        budget: float | None,
        only: list[str] | None = None,
    ) -> list[HookResult]:
        """Run the hooks of ``event`` (``only`` those named, when given; all within ``budget``
        seconds when given); what failed is logged, a hook refused for its ownership or mode
        journalled too."""
        if self._none_for(event):
            return []
        results = await self.runner.run(event, payload, budget=budget, only=only)
        for result in results:
            if result.done:
                continue
            log.warning("hook %s for %s: %s", result.hook, event, result.detail)
            if result.detail.startswith("refused:") and self._journal is not None:
                self._journal.note("hook-refused", hook=result.hook, reason=result.detail)
        return results
