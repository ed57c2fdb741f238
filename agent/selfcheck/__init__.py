"""The self-check (DESIGN.md section 6): checks run concurrently, each within its own deadline,
and give a doctor-style report a technician reads at a glance, in Chinese or English.

Each check is a module with ``ID`` and ``async def check(context) -> CheckResult``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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
from agent.selfcheck.base import CheckResult, Context, Status, Text, elapsed_ms

Check = Callable[[Context], Awaitable[CheckResult]]
CHECKS: dict[str, Check] = {
    m.ID: m.check
    for m in (provisioning, clock, network, keys, module, registration, storage, session)
}
# What recovery runs after a 97: what can explain it, not what only informs.
FAST = ("provisioning", "clock", "network", "keys")
NAMES = {
    "provisioning": Text("provisioning", "终端参数"),
    "clock": Text("clock", "时钟"),
    "network": Text("network", "网络"),
    "keys": Text("keys", "密钥"),
    "module": Text("module", "加密模块"),
    "registration": Text("registration", "终端报备"),
    "storage": Text("storage", "存储"),
    "session": Text("session", "会话"),
}


@dataclass(frozen=True)
class Report:
    checks: list[CheckResult]
    duration_ms: int

    @property
    def ok(self) -> bool:
        return all(c.status is not Status.FAIL for c in self.checks)

    def get(self, check_id: str) -> CheckResult | None:
        return next((c for c in self.checks if c.id == check_id), None)


async def _bounded(check_id: str, check: Check, context: Context, deadline: float) -> CheckResult:
    started = time.monotonic()
    try:
        result = await asyncio.wait_for(check(context), deadline)
    except TimeoutError:
        result = CheckResult(
            check_id,
            Status.FAIL,
            Text(f"did not finish within {deadline:.0f} s", f"未在 {deadline:.0f} 秒内完成"),
            remedy=Text("run the self-check again; if it repeats, call support",
                        "再次运行自检；如仍出现请联系客服"),
            finding="timeout",
        )  # fmt: skip
    except Exception as exc:  # a check's bug must not hide the other checks' findings
        result = CheckResult(
            check_id,
            Status.FAIL,
            Text(f"the check itself failed: {type(exc).__name__}: {exc}", "检查程序出错"),
            f"{type(exc).__name__}: {exc}",
            finding="check-error",
        )  # fmt: skip
    return dataclasses.replace(result, duration_ms=elapsed_ms(started))


async def run_checks(context: Context, only: list[str] | None = None) -> Report:
    """Run the checks named in ``only`` (all by default) concurrently."""
    started = time.monotonic()
    chosen = [i for i in CHECKS if only is None or i in only]
    deadline = context.config.selftest.deadline
    results = await asyncio.gather(*(_bounded(i, CHECKS[i], context, deadline) for i in chosen))
    return Report(list(results), elapsed_ms(started))


__all__ = ["CHECKS", "FAST", "NAMES", "CheckResult", "Context", "Report", "Status", "run_checks"]
