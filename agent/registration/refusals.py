"""A host's refusal that recovery attributed to the request, not to the terminal (DESIGN.md
section 7 point 4, section 17): which finding it is, what the merchant is told, and how many of
each kind there were."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass

from agent.selfcheck.base import Text


class A2(enum.StrEnum):
    """What went to the host in field 59 usage A2, for a class that must carry one."""

    MODULE = "module"  # the agent built it through the card module
    APP = "app"  # the app's own, well-formed
    MISSING = "missing"  # none went out (registration.tusn = "app" or "off")
    MALFORMED = "malformed"  # the app's, not well-formed


@dataclass(frozen=True)
class A2Sent:
    """Field 59 A2 of a request as it left: how, and the TUSN it named (empty when none)."""

    status: A2
    tusn: str = ""
    problem: str = ""  # what is wrong with a malformed one


FINDINGS = {
    A2.MISSING: "registration.a2-missing",
    A2.MALFORMED: "registration.a2-malformed",
    A2.MODULE: "registration.tusn-refused",
    A2.APP: "registration.tusn-refused",
}
# A refusal of a class that carries no A2: field 59 cannot explain it.
OTHER = "request.refused"


def finding(a2: A2Sent | None) -> str:
    return FINDINGS[a2.status] if a2 is not None else OTHER


def advice(a2: A2Sent | None, code: str, code_text: Text) -> Text:
    """What the merchant is told about this one refused request: never "register the
    terminal", which is registered (its sign-in was approved)."""
    if a2 is None:
        return Text(
            f"the acquirer refused this request with {code} ({code_text.en}) although the "
            "terminal is signed in; other requests go on. Ask the acquirer whether this "
            "transaction type is enabled for the terminal",
            f"终端已签到，但收单机构拒绝了此笔交易（{code}，{code_text.zh}），其他交易不受影响。"
            "请向收单机构确认终端是否开通此交易类型",
        )
    if a2.status is A2.MISSING:
        return Text(
            f"the acquirer refused this request with {code}: it carried no terminal hardware "
            "serial number (field 59 A2). Update the payment app, or set registration.tusn = "
            '"module" so the agent adds it',
            f"收单机构拒绝了此笔交易（{code}）：交易未上送终端硬件序列号（59 域 A2）。"
            '请升级收款应用，或设置 registration.tusn = "module" 由代理补充',
        )
    if a2.status is A2.MALFORMED:
        return Text(
            f"the acquirer refused this request with {code}: the payment app's terminal "
            f"hardware serial number (field 59 A2) is malformed ({a2.problem}). Have the "
            "payment app fixed",
            f"收单机构拒绝了此笔交易（{code}）：收款应用上送的终端硬件序列号（59 域 A2）格式错误"
            f"（{a2.problem}）。请联系收款应用厂商修正",
        )
    tusn = a2.tusn or "?"
    # short enough that field 63 (163 characters) holds it whole after the finding code
    return Text(
        f"the acquirer refused {code} for TUSN {tusn}: have it reported to the acquirer; "
        "the terminal itself is registered",
        f"收单机构拒绝此笔交易（{code}）：终端硬件序列号 {tusn} 未报备。请让收单机构为该序列号"
        "办理报备（报送银联）；终端本身已登记",
    )


class RefusalCounts:
    """Refusals attributed to requests, by finding: what ``agent status`` shows, and the last
    one for the self-check's registration check."""

    def __init__(self) -> None:
        self.by_finding: Counter[str] = Counter()
        self.last: dict[str, object] | None = None

    def add(self, finding: str, detail: dict[str, object]) -> None:
        self.by_finding[finding] += 1
        self.last = {"finding": finding, **detail}
