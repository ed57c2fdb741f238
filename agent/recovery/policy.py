"""The decision table of 97 recovery (DESIGN.md section 7), pure: which answers are refusals the
terminal can repair, which remedies a self-check's findings call for, and what the merchant is
told when a person must act."""

from __future__ import annotations

import enum

from agent.selfcheck import Report
from agent.selfcheck.base import Status, Text
from agent.wire import codes
from agent.wire.message import Message

REFUSALS = (codes.Category.TERMINAL_CONFIG, codes.Category.SESSION, codes.Category.SECURITY)
PERSON_MUST_ACT = {"tmk-absent", "tampered", "module-unreachable"}


class State(enum.StrEnum):
    REGISTERED = "registered"
    RECOVERING = "recovering"
    UNREGISTERED = "unregistered"


def refused(answer: Message) -> bool:
    code = answer.text(39, "")
    return codes.is_code(code) and codes.lookup(code).category in REFUSALS


def decide(report: Report, code: str = "") -> list[str]:
    """The decision table: self-check findings (and the refusal's code) to remedies, in the
    order they are tried. Empty means no remedy the terminal can apply: a person must act."""
    findings = {c.id: c.finding for c in report.checks if c.status in (Status.WARN, Status.FAIL)}
    if PERSON_MUST_ACT & set(findings.values()):
        return []
    plan = []
    if codes.is_code(code) and codes.lookup(code).category is codes.Category.SESSION:
        plan.append("sign-in")  # 77: the sign-in takes the host's batch (60.2 of its 0810)
    if findings.get("provisioning") in ("unprovisioned", "differs-from-tms"):
        plan.append("provision")
    if findings.get("clock") == "clock-off":
        plan.append("sync-clock")
    if findings.get("network") == "primary-down":
        plan.append("fail-over")
    if findings.get("keys") in ("keys-absent", "kcv-mismatch", "never-signed-in", "mac-selftest"):
        plan.append("sign-in")
    if findings.get("provisioning") == "changed-since-signin":
        plan.append("sign-in")
    if not plan:  # everything looks healthy: the host lost us
        plan = ["sign-in", "provision"]
    return list(dict.fromkeys(plan))


def unregistered_message(
    identity: dict[str, str], reason: Text, action: Text | None = None
) -> Text:
    """What the merchant's screen and the vendor's hooks say: which terminal, why, and who to
    call (the support number from the configuration)."""
    tid, mid = identity.get("tid") or "-", identity.get("mid") or "-"
    phone = identity.get("support_phone") or ""
    action = action or Text(
        "call acquirer support to register the terminal", "请联系收单机构客服登记终端"
    )
    call_en = f" (support: {phone})" if phone else ""
    call_zh = f"（客服电话 {phone}）" if phone else ""
    return Text(
        f"Payments paused on terminal {tid}, merchant {mid}: {reason.en}. "
        f"{action.en[0].upper()}{action.en[1:]}{call_en}.",
        f"终端 {tid}（商户 {mid}）暂停收款：{reason.zh}。{action.zh}{call_zh}。",
    )
