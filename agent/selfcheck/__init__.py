"""The self-check (DESIGN.md section 6): checks run concurrently, each within its own deadline,
and give a doctor-style report a technician reads at a glance, in Chinese or English.

Each check is a module with ``ID`` and ``async def check(context) -> CheckResult``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.messages import CHECK_NAMES as NAMES
from agent.selfcheck.base import CheckResult, Context, Status, elapsed_ms

Check = Callable[[Context], Awaitable[CheckResult]]
# What recovery runs after a 97: what can explain it, not what only informs.
FAST = ("provisioning", "clock", "network", "keys")


@functools.cache
def checks() -> dict[str, Check]:
    """Every check by id, in the order a report lists them. The checks' modules are imported at
    the first run, not with this package: the service imports it at start and may run no check
    for minutes (they bring a dozen modules it would load before it is ready)."""
    from agent.selfcheck import (
        clock,
        keys,
        module,
        network,
        provisioning,
        registration,
        session,
        storage,
    )

    return {
        m.ID: m.check
        for m in (provisioning, clock, network, keys, module, registration, storage, session)
    }


@dataclass(frozen=True)
class Report:
    """A self-check's results, in the order the checks are listed."""

    checks: list[CheckResult]
    duration_ms: int

    @property
    def ok(self) -> bool:
        return all(c.status is not Status.FAIL for c in self.checks)

    def get(self, check_id: str) -> CheckResult | None:
        return next((c for c in self.checks if c.id == check_id), None)

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.checks]


async def _bounded(check_id: str, check: Check, context: Context, deadline: float) -> CheckResult:
    started = time.monotonic()
    try:
        async with asyncio.timeout(deadline):
            result = await check(context)
    except TimeoutError:
        result = CheckResult.of(
            check_id, Status.FAIL, finding="timeout", deadline=f"{deadline:.0f}"
        )
    except Exception as exc:  # a check's bug must not hide the other checks' findings
        error = f"{type(exc).__name__}: {exc}"
        result = CheckResult.of(check_id, Status.FAIL, error, finding="check-error", error=error)
    return dataclasses.replace(result, duration_ms=elapsed_ms(started))


def asked(only: object) -> list[str] | None:
    """The check ids a control-socket request names in ``"only"`` (None: every check);
    ``ValueError`` naming what is wrong with them."""
    if only is None:
        return None
    if not (isinstance(only, list) and all(isinstance(i, str) for i in only)):
        raise ValueError('"only" must be a list of check ids')
    known = checks()
    unknown = [check for check in only if check not in known]
    if unknown:
        raise ValueError(f"no such check: {', '.join(unknown)}; expected {', '.join(known)}")
    return only


async def run_checks(context: Context, only: list[str] | None = None) -> Report:
    """Run the checks named in ``only`` (all by default) concurrently."""
    started = time.monotonic()
    every = checks()
    chosen = [i for i in every if only is None or i in only]
    deadline = context.config.selftest.deadline
    results = await asyncio.gather(*(_bounded(i, every[i], context, deadline) for i in chosen))
    return Report(list(results), elapsed_ms(started))


__all__ = [
    "FAST", "NAMES", "CheckResult", "Context", "Report", "Status", "asked", "checks", "run_checks",
]  # fmt: skip
