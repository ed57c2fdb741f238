"""Response codes (field 39): one catalogue, each code in Chinese and English with its category
and what the agent does about it. Unknown codes are reported as unknown, never guessed."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Category(enum.StrEnum):
    APPROVED = "approved"
    DECLINE = "decline"
    RETRY_LATER = "retry-later"
    TERMINAL_CONFIG = "terminal-config"
    SESSION = "session"
    SECURITY = "security"
    FORMAT = "format"
    DUPLICATE = "duplicate"
    UNKNOWN = "unknown"


# What the agent does for a code of each category: (English, Chinese).
ACTIONS: dict[Category, tuple[str, str]] = {
    Category.APPROVED: (
        "pass the approval back to the payment app",
        "将批准结果返回收银应用",
    ),
    Category.DECLINE: (
        "pass the decline back; the cardholder or issuer must act, nothing is retried",
        "将拒绝结果返回收银应用；需持卡人或发卡行处理，不自动重试",
    ),
    Category.RETRY_LATER: (
        "pass it back; the payment app may try again later (the agent never repeats a "
        "financial request by itself)",
        "返回收银应用，可稍后再试（本程序不会自行重发金融交易）",
    ),
    Category.TERMINAL_CONFIG: (
        "run the self-check, repair (re-provision, sign in, correct the clock, fail over), retry "
        "with a new STAN; escalate with a bilingual message if it persists",
        "运行自检并修复（重新下载参数、重新签到、校时、切换主机），用新流水号重试；仍失败则提示人工处理",
    ),
    Category.SESSION: (
        "sign in again and take the host's batch number, then retry with a new STAN",
        "重新签到并采用主机的批次号，再用新流水号重试",
    ),
    Category.SECURITY: (
        "sign in again for fresh working keys; a wrong response MAC also reverses the transaction",
        "重新签到以更新工作密钥；应答 MAC 错误时同时冲正该交易",
    ),
    Category.FORMAT: (
        "report it: the terminal sent a malformed message; the journal keeps the evidence",
        "上报问题：终端报文格式有误，日志中保留证据",
    ),
    Category.DUPLICATE: (
        "look up the original transaction in the journal before anything else",
        "先在日志中查找原交易，再做处理",
    ),
    Category.UNKNOWN: (
        "pass it back unchanged as an unknown code; nothing is guessed",
        "作为未知应答码原样返回，不做猜测",
    ),
}


@dataclass(frozen=True)
class ResponseCode:
    """A response code (field 39): what it means, in Chinese and English, and its category."""

    code: str
    zh: str
    en: str
    category: Category

    @property
    def known(self) -> bool:
        return self.category is not Category.UNKNOWN

    @property
    def action_en(self) -> str:
        return ACTIONS[self.category][0]

    @property
    def action_zh(self) -> str:
        return ACTIONS[self.category][1]

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "known": self.known,
            "category": str(self.category),
            "zh": self.zh,
            "en": self.en,
            "action": {"en": self.action_en, "zh": self.action_zh},
        }


_A, _D, _R = Category.APPROVED, Category.DECLINE, Category.RETRY_LATER
_T, _S, _X = Category.TERMINAL_CONFIG, Category.SECURITY, Category.SESSION

_DEFECT_ZH = "有缺陷的成功（交易成功，请向发卡行确认）"
_DEFECT_EN = "approved with a defect: confirm with the issuer"

# Q/CUP 006.6 table A.2 (POS response codes), with the categories of DESIGN.md section 4.
_TABLE: tuple[tuple[str, Category, str, str], ...] = (
    ("00", _A, "承兑或交易成功", "approved"),
    ("01", _D, "查发卡行", "refer to card issuer"),
    ("02", _D, "查发卡行的特殊条件", "refer to card issuer, special condition"),
    ("03", _T, "无效商户", "invalid merchant"),
    ("04", _D, "没收卡", "pick up card"),
    ("05", _D, "身份认证失败，不予承兑", "do not honour (cardholder verification failed)"),
    ("06", _D, "出错", "error"),
    ("07", _D, "特殊条件下没收卡", "pick up card, special condition"),
    ("10", _A, "部分承兑", "approved for a partial amount"),
    ("11", _A, "重要人物批准（VIP）", "approved (VIP)"),
    ("12", _D, "无效的关联交易", "invalid transaction"),
    ("13", _D, "无效金额", "invalid amount"),
    ("14", _D, "无效卡号（无此账号）", "invalid card number (no such account)"),
    ("15", _D, "无此发卡方", "no such issuer"),
    ("21", _D, "卡未初始化", "card not initialised"),
    ("22", _D, "故障怀疑，关联交易错误", "suspected malfunction, related transaction error"),
    ("23", _D, "不可接受的交易费", "unacceptable transaction fee"),
    ("25", _D, "找不到原始交易", "unable to locate the original transaction"),
    ("30", Category.FORMAT, "报文格式错误", "format error"),
    ("31", _D, "交换中心不支持的银行", "bank not supported by the switch"),
    ("33", _D, "过期的卡，没收", "expired card, pick up"),
    ("34", _D, "有作弊嫌疑，没收", "suspected fraud, pick up"),
    ("35", _D, "受卡方与安全保密部门联系，没收", "card acceptor call acquirer security, pick up"),
    ("36", _D, "受限制的卡，没收", "restricted card, pick up"),
    ("37", _D, "受卡方呼受理方安全保密部门，没收", "card acceptor call acquirer security, pick up"),
    ("38", _D, "超过允许的 PIN 试输入，没收", "allowable PIN tries exceeded, pick up"),
    ("39", _D, "无此信用卡账户", "no credit account"),
    ("40", _D, "请求的功能尚不支持", "requested function not supported"),
    ("41", _D, "挂失卡，没收", "lost card, pick up"),
    ("42", _D, "无此账户", "no universal account"),
    ("43", _D, "被窃卡，没收", "stolen card, pick up"),
    ("44", _D, "无此投资账户", "no investment account"),
    ("45", _D, "不允许降级交易，请使用 IC 卡", "fallback not allowed: use the chip"),
    ("51", _D, "资金不足", "insufficient funds"),
    ("52", _D, "无此支票账户", "no cheque account"),
    ("53", _D, "无此储蓄卡账户", "no savings account"),
    ("54", _D, "过期的卡", "expired card"),
    ("55", _D, "不正确的 PIN", "incorrect PIN"),
    ("56", _D, "无此卡记录", "no card record"),
    ("57", _D, "不允许持卡人进行的交易", "transaction not permitted to the cardholder"),
    ("58", _T, "不允许终端进行的交易", "transaction not permitted on this terminal"),
    ("59", _D, "有作弊嫌疑", "suspected fraud"),
    ("60", _D, "受卡方与受理方联系", "card acceptor contact the acquirer"),
    ("61", _D, "超出金额限制", "exceeds the amount limit"),
    ("62", _D, "受限制的卡", "restricted card"),
    ("63", _D, "违反安全保密规定", "security violation"),
    ("64", _D, "原始金额不正确", "original amount incorrect"),
    ("65", _D, "超出取款次数限制", "exceeds the frequency limit"),
    ("66", _D, "受卡方呼受理方安全保密部门", "card acceptor call acquirer security"),
    ("67", _D, "捕捉（没收卡）", "hard capture, pick up card"),
    ("68", _R, "收到的回答太迟", "response received too late"),
    ("75", _D, "允许的输入 PIN 次数超限", "allowable PIN tries exceeded"),
    ("77", _X, "需要向网络中心签到（批次号与主机不一致）",
     "sign in again (the batch differs from the host's)"),
    ("90", _R, "正在日终处理（切换新账期）", "cut-off in progress"),
    ("91", _R, "发卡方或交换中心不能操作", "issuer or switch inoperative"),
    ("92", _R, "金融机构或中间网络设施找不到或无法达到", "institution or network unreachable"),
    ("93", _D, "交易违法、不能完成", "transaction cannot be completed, violation of law"),
    ("94", Category.DUPLICATE, "重复交易", "duplicate transmission"),
    ("96", _R, "交换中心系统异常、失效", "system malfunction"),
    ("97", _T, "终端未登记（终端号找不到）", "terminal not registered (terminal id not found)"),
    ("98", _R, "交换中心收不到发卡方应答", "issuer response not received by the switch"),
    ("99", _S, "PIN 格式错，请重新签到", "PIN format error: sign in again"),
    ("A0", _S, "MAC 校验错，请重新签到", "MAC verification failed: sign in again"),
    ("A1", _D, "转账货币不一致", "transfer currencies differ"),
    ("A2", _A, _DEFECT_ZH, _DEFECT_EN),
    ("A3", _D, "资金到账行无此账户", "no such account at the receiving bank"),
    ("A4", _A, _DEFECT_ZH, _DEFECT_EN),
    ("A5", _A, _DEFECT_ZH, _DEFECT_EN),
    ("A6", _A, _DEFECT_ZH, _DEFECT_EN),
    ("A7", _S, "安全处理失败", "security processing failed"),
    ("C1", _T, "受理方状态非法", "card acceptor state illegal"),
)  # fmt: skip


class ReversalOutcome(enum.StrEnum):
    """What a host's answer to a reversal (0410) means for the queued reversal."""

    CONFIRMED = "confirmed"  # reversed
    NOTHING_TO_REVERSE = "nothing-to-reverse"  # 12, 25: the original never took effect
    CONFLICT = "conflict"  # 22: the host disagrees about the original; a person must look
    NOT_DONE = "not-done"  # anything else: the reversal stays queued


def reversal_outcome(code: str) -> ReversalOutcome:
    """DESIGN.md section 4: an approval confirms a reversal, 12 and 25 close it too (there is
    nothing to reverse), 22 closes it as a conflict that is escalated."""
    if not is_code(code):
        return ReversalOutcome.NOT_DONE
    if code in ("12", "25"):
        return ReversalOutcome.NOTHING_TO_REVERSE
    if code == "22":
        return ReversalOutcome.CONFLICT
    if lookup(code).category is Category.APPROVED:
        return ReversalOutcome.CONFIRMED
    return ReversalOutcome.NOT_DONE


CATALOGUE: dict[str, ResponseCode] = {
    code: ResponseCode(code, zh, en, category) for code, category, zh, en in _TABLE
}


def is_code(text: str) -> bool:
    """Whether ``text`` has the form of field 39: two printable ASCII characters."""
    return len(text) == 2 and text.isascii() and text.isprintable()


def approved(code: str) -> bool:
    """Whether field 39 = ``code`` is an approval (00, 10, 11, A2, A4, A5, A6)."""
    return is_code(code) and lookup(code).category is Category.APPROVED


def lookup(code: str) -> ResponseCode:
    """The catalogue entry for ``code``; an unknown code gets category ``unknown``."""
    if not is_code(code):
        raise ValueError(f"a response code is 2 characters (field 39, an2), got {code!r}")
    code = code.upper()
    return CATALOGUE.get(code) or ResponseCode(
        code, "未知应答码", "unknown response code", Category.UNKNOWN
    )
