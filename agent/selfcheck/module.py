"""Module: the card module answers INFO, is not tampered with, and its firmware is the one on
record (a change is noted; a swapped module explains lost keys)."""

from __future__ import annotations

from agent.journal import PATIENCE
from agent.selfcheck.base import CheckResult, Context, Status
from drivers.module import ModuleError, ModuleStatusError
from drivers.module import Status as ModuleStatus

ID = "module"


def tampered(check_id: str, detail: str) -> CheckResult:
    return CheckResult.of(check_id, Status.FAIL, detail, finding="tampered")


def failure(check_id: str, url: str, exc: ModuleError) -> CheckResult:
    """What a check says when the module refuses or fails to answer: a tamper lock, for which a
    person must act, or a module that cannot be reached."""
    if isinstance(exc, ModuleStatusError) and exc.status == ModuleStatus.TAMPERED:
        return tampered(check_id, str(exc))
    return CheckResult.of(
        check_id,
        Status.FAIL,
        f"module {url}: {exc}",
        finding="module-unreachable",
        error=str(exc),
        url=url,
    )


async def check(context: Context) -> CheckResult:
    url = context.config.module.url
    if context.module is None:
        return CheckResult.of(ID, Status.SKIP)
    try:
        info = await context.module_info()
    except ModuleError as exc:
        return failure(ID, url, exc)
    serial, model, firmware = info.serial.strip(), info.model.strip(), info.firmware.strip()
    described = f"serial {serial}, model {model}, firmware {firmware}"
    if info.tampered:
        return tampered(ID, described)
    journal = context.journal
    recorded = await journal.within(PATIENCE, journal.recall, "module") if journal else None
    if journal is not None and recorded != described:
        if not journal.read_only:
            await journal.within(PATIENCE, journal.remember, "module", described)
        if recorded is not None:
            return CheckResult.of(
                ID, Status.WARN, f"now {described}; before {recorded}", finding="module-changed"
            )
    return CheckResult.of(ID, Status.OK, serial=serial, model=model, firmware=firmware)
