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


@dataclass(frozen=True)
class Explained:
    """What ``agent explain FINDING`` says of a registration finding: what it means and what
    to do, in both languages."""

    meaning: Text
    action: Text


EXPLAINED: dict[str, Explained] = {
    "registration.tusn-refused": Explained(
        Text("the acquirer refused a purchase or pre-authorisation that carried a well-formed "
             "terminal hardware serial number (TUSN, field 59 A2): it does not know this TUSN",
             "收单机构拒绝了带有格式正确的终端硬件序列号（59 域 A2）的消费或预授权："
             "该序列号未报备"),
        Text("have the TUSN that `agent selftest` shows reported (报备) to the acquirer and by "
             "it to UnionPay; the terminal itself is registered, other requests go on",
             "请让收单机构为 `agent selftest` 显示的序列号办理报备（报送银联）；"
             "终端本身已登记，其他交易不受影响"),
    ),
    "registration.a2-missing": Explained(
        Text("a purchase or pre-authorisation went to the acquirer without field 59 A2 (the "
             "TUSN), which CUP has required since 2017",
             "消费或预授权上送时缺少 59 域 A2（终端硬件序列号），银联自 2017 年起要求上送"),
        Text('set registration.tusn = "module" so the agent adds it, or update the payment app',
             '设置 registration.tusn = "module" 由代理补充，或升级收款应用'),
    ),
    "registration.a2-malformed": Explained(
        Text("the payment app's field 59 A2 is not well formed (a sub-usage missing, a wrong "
             "length, a ciphertext that is not 8 upper-case hex digits)",
             "收款应用上送的 59 域 A2 格式错误（缺少子用法、长度错误或密文不是 8 位大写十六进制）"),
        Text('have the payment app fixed, or let the agent build A2 (registration.tusn = "module"'
             " and an app that sends none)",
             '请收款应用厂商修正，或由代理生成 A2（registration.tusn = "module"，应用不上送 A2）'),
    ),
    "registration.tusn-absent": Explained(
        Text("the card module gives no TUSN (no TUSN key injected, or it does not know the "
             "command)", "加密模块无法提供终端硬件序列号（未灌装 TUSN 密钥或不支持该指令）"),
        Text("have the manufacturer inject the TUSN key, or use a payment app that builds A2",
             "请厂商灌装 TUSN 密钥，或使用自行生成 A2 的收款应用"),
    ),
    "registration.tusn-malformed": Explained(
        Text("the card module's TUSN is not 6 manufacturer digits, 2 device-type digits and a "
             "serial", "加密模块的序列号不是 6 位厂商编号、2 位设备类型加序列号的格式"),
        Text("call the terminal's manufacturer", "请联系终端厂商"),
    ),
    "registration.tusn-differs-from-tms": Explained(
        Text("the card module's TUSN is not the one the TMS holds for this terminal (a module "
             "swapped, or a record not updated)",
             "加密模块的序列号与 TMS 记录不一致（更换了模块或记录未更新）"),
        Text("have the acquirer report the module's TUSN, and the TMS record updated",
             "请收单机构为模块的序列号报备，并更新 TMS 记录"),
    ),
    "registration.tusn-not-reported": Explained(
        Text("the acquirer's own check (the registration-check hook) says the TUSN is not "
             "reported to UnionPay",
             "收单机构的查询（registration-check 钩子）显示该序列号未向银联报备"),
        Text("have the TUSN reported before the first sale", "首笔交易前请办理报备"),
    ),
    "registration.location-unavailable": Explained(
        Text("the acquirer wants the terminal's location (field 59 A5) and no location source "
             "answers", "收单机构要求上送位置信息（59 域 A5），但无法取得位置"),
        Text("install a location hook (ModemManager or gpsd) and check the modem or GPS",
             "安装位置钩子（ModemManager 或 gpsd）并检查调制解调器或 GPS"),
    ),
}  # fmt: skip
