"""How the agent tells the firmware hooks (DESIGN.md section 9): in the background and in the
order the events happened when it only informs them (a hook never holds up a payment or a
recovery, and a display-message must never overtake the one it replaces), or within a budget
when a remedy waits for what they did. The hooks directory and timeout are the configuration's
in effect: a reload changes them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.config import Config, HooksConfig
from agent.journal import Journal

if TYPE_CHECKING:
    from firmware_hooks import HookResult, HookRunner

log = logging.getLogger(__name__)


def hook_runner(hooks: HooksConfig) -> HookRunner:
    """The runner of the configured hooks: executables under ``hooks.directory`` and Python
    entry points; an empty directory means no hooks at all (DESIGN.md section 9)."""
    # imported by the first use: a service whose hooks never run starts without its modules
    from firmware_hooks import HookRunner

    return HookRunner(hooks.directory, timeout=hooks.timeout, entry_points=bool(hooks.directory))


class HookDispatch:
    def __init__(self, settings: Callable[[], Config], journal: Journal) -> None:
        self._settings = settings
        self._journal = journal
        self._runner: tuple[object, HookRunner] | None = None  # (the hooks settings, runner)
        self._tasks: set[asyncio.Future[None]] = set()
        self._in_order = asyncio.Lock()

    @property
    def runner(self) -> HookRunner:
        hooks = self._settings().hooks
        if self._runner is None or self._runner[0] != hooks:
            self._runner = (hooks, hook_runner(hooks))
        return self._runner[1]

    @property
    def timeout(self) -> float:
        return self._settings().hooks.timeout

    def tell(self, event: str, payload: dict[str, Any]) -> None:
        """Tell the hooks of ``event`` in the background, after those told before."""
        task = asyncio.ensure_future(self._tell(event, payload))
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

    async def _tell(self, event: str, payload: dict[str, Any]) -> None:
        try:
            async with self._in_order:
                await self.ask(event, payload, budget=None)
        except Exception:  # a hook runner bug must not surface in a payment's task
            log.exception("running the %s hooks failed", event)

    async def ask(
        self, event: str, payload: dict[str, Any], budget: float | None
    ) -> list[HookResult]:
        """Run the hooks of ``event`` (all within ``budget`` seconds when given); what failed is
        logged, a hook refused for its ownership or mode journalled too."""
        results = await self.runner.run(event, payload, budget=budget)
        for result in results:
            if result.done:
                continue
            log.warning("hook %s for %s: %s", result.hook, event, result.detail)
            if result.detail.startswith("refused:"):
                self._journal.note("hook-refused", hook=result.hook, reason=result.detail)
        return results
