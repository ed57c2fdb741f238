"""The decision table of 97 recovery (DESIGN.md section 7), pure: which answers are refusals the
terminal can repair, which remedies a self-check's findings call for, and what the merchant is
told when a person must act."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from agent import messages
from agent.messages import Text
from agent.wire import codes
from agent.wire.message import Message

if TYPE_CHECKING:
    from agent.selfcheck import Report

REFUSALS = (codes.Category.TERMINAL_CONFIG, codes.Category.SESSION, codes.Category.SECURITY)
PERSON_MUST_ACT = {"tmk-absent", "tampered", "module-unreachable"}
# what a remote master-key download repairs (DESIGN.md section 18), where the acquirer offers one
TMK_DOWNLOAD_REPAIRS = {"tmk-absent"}


class State(enum.StrEnum):
    REGISTERED = "registered"
    RECOVERING = "recovering"
    UNREGISTERED = "unregistered"


def refused(answer: Message) -> bool:
    code = answer.text(39, "")
    return codes.is_code(code) and codes.lookup(code).category in REFUSALS


def decide(
    report: Report, code: str = "", *, keys_refused: bool = False, tmk_download: bool = False
) -> list[str]:
    """The decision table: self-check findings (and the refusal's code) to remedies, in the
    order they are tried. Empty means no remedy the terminal can apply: a person must act.
    ``keys_refused``: the module refused the working keys of a sign-in the host approved (its
    master key is not the host's); ``tmk_download``: a master-key download is configured and
    was not tried within ``keys.tmk_download_every``."""
    from agent.selfcheck.base import Status  # loaded by the check that made the report

    findings = {c.id: c.finding for c in report.checks if c.status in (Status.WARN, Status.FAIL)}
    download = tmk_download and (keys_refused or findings.get("keys") in TMK_DOWNLOAD_REPAIRS)
    blocking = PERSON_MUST_ACT - TMK_DOWNLOAD_REPAIRS if download else PERSON_MUST_ACT
    if blocking & set(findings.values()):
        return []
    # first: nothing else works without a master key the host's keys are under
    plan = ["tmk-download", "sign-in"] if download else []
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


# why a terminal is unregistered when the module refused an approved sign-in's keys, and what to do
KEYS_REFUSED = messages.message("keys.tmk-mismatch")
LOAD_TMK = messages.remedy("keys.tmk-mismatch")


def unregistered_message(
    identity: dict[str, str], reason: Text, action: Text | None = None
) -> Text:
    """What the merchant's screen and the vendor's hooks say: which terminal, why, and who to
    call (the support number from the configuration); without ``action``, have the acquirer
    register the terminal."""
    phone = identity.get("support_phone") or ""
    support = messages.message("recovery:support-phone", phone=phone) if phone else messages.EMPTY
    return messages.message(
        "recovery:unregistered",
        tid=identity.get("tid") or "-",
        mid=identity.get("mid") or "-",
        reason=reason,
        action=messages.sentence(action or messages.message("recovery:register-terminal")),
        support=support,
    )
