"""Module: the card module answers INFO, is not tampered with, and its firmware is the one on
record (a change is noted; a swapped module explains lost keys)."""

from __future__ import annotations

from agent.journal import PATIENCE
from agent.selfcheck.base import CheckResult, Context, Status, Text
from drivers.module import ModuleError, ModuleStatusError
from drivers.module import Status as ModuleStatus

ID = "module"


def tampered(check_id: str, detail: str) -> CheckResult:
    return CheckResult(
        check_id,
        Status.FAIL,
        Text("the card module reports tampering: it is locked", "加密模块报告防拆触发，已锁定"),
        detail,
        Text("take the terminal out of service and call support", "停止使用该终端并联系客服"),
        finding="tampered",
    )


def failure(check_id: str, url: str, exc: ModuleError) -> CheckResult:
    """What a check says when the module refuses or fails to answer: a tamper lock, for which a
    person must act, or a module that cannot be reached."""
    if isinstance(exc, ModuleStatusError) and exc.status == ModuleStatus.TAMPERED:
        return tampered(check_id, str(exc))
    return CheckResult(
        check_id,
        Status.FAIL,
        Text(f"the card module does not answer: {exc}", "加密模块无响应"),
        f"module {url}: {exc}",
        Text(
            f"check the module's cable and power and that {url} is the right device (module.url)",
            f"检查加密模块连线和电源，并确认 {url} 是正确的设备（module.url）",
        ),
        finding="module-unreachable",
    )


async def check(context: Context) -> CheckResult:
    url = context.config.module.url
    if context.module is None:
        return CheckResult(ID, Status.SKIP, Text("no card module", "无加密模块"))
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
            return CheckResult(
                ID,
                Status.WARN,
                Text("the card module changed since last seen", "加密模块与上次记录不同"),
                f"now {described}; before {recorded}",
                Text("a new module needs its master key and a sign-in", "新模块需灌装主密钥并签到"),
                finding="module-changed",
            )
    return CheckResult(
        ID,
        Status.OK,
        Text(
            f"module answers: {described}",
            f"模块正常：序列号 {serial}，型号 {model}，固件 {firmware}",
        ),
    )
