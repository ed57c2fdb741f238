"""The bilingual catalogue (DESIGN.md section 13): every sentence the agent says to a technician
or a merchant, in English and Chinese, keyed by the stable finding code that the self-check's
JSON, recovery's cause and a refused request carry (``keys.tmk-absent``). One table of Python
strings, not gettext: a terminal has both languages at once (the self-check's JSON and the
merchant's message carry both), and there is nothing to compile or ship beside the code.

A key is one of:

- a code (``keys.tmk-absent``): what a check or recovery says when it finds it (``summary``,
  ``remedy``), and what the code means whatever the values (``meaning``, ``action``: ``agent
  explain``);
- a pattern of codes (``<check>.timeout``, ``host.<code>-after-signin``) for codes any check or
  any response code can give;
- ``code:situation`` where a code is said another way in one situation
  (``keys.mac-selftest:macs-differ``); what it leaves out is the code's;
- ``area:name`` for the words that are no finding's own (``clock:host``, ``recovery:unregistered``).

Templates take ``str.format`` placeholders; a value said in both languages (a :class:`Text`, a
response code) goes into each language's text as that language says it. An unknown key, a value
missing or a value no template takes raises :class:`CatalogueError`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class Text:
    """One sentence in both languages the technician or the merchant may read."""

    en: str
    zh: str

    def __call__(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en

    def to_json(self) -> dict[str, str]:
        return {"en": self.en, "zh": self.zh}


class Bilingual(Protocol):
    """Anything worded in both languages: a :class:`Text`, a response code of
    :mod:`agent.wire.codes`."""

    @property
    def en(self) -> str: ...

    @property
    def zh(self) -> str: ...


Value = str | int | float | Bilingual
Part = Literal["summary", "remedy", "meaning", "action"]


class CatalogueError(LookupError):
    """A key the catalogue does not have, or values that do not fit its templates."""


@dataclass(frozen=True, kw_only=True)
class Entry:
    """What the catalogue says of one code, each part where it has one."""

    summary: Text | None = None  # what was found, with the values of the moment
    remedy: Text | None = None  # what to do about it, with the values of the moment
    meaning: Text | None = None  # what the code means, for any values (`agent explain`)
    action: Text | None = None  # what to do about the code in general; else its remedy


EMPTY = Text("", "")  # an optional part of a sentence, left out
# The one value a Chinese text may leave out: a system's own English error text, which the
# check's detail line shows anyway (a Chinese line holds no English sentence).
ENGLISH_ONLY = "error"

CHECK_NAMES: dict[str, Text] = {
    "provisioning": Text("provisioning", "终端参数"),
    "clock": Text("clock", "时钟"),
    "network": Text("network", "网络"),
    "keys": Text("keys", "密钥"),
    "module": Text("module", "加密模块"),
    "registration": Text("registration", "终端报备"),
    "storage": Text("storage", "存储"),
    "session": Text("session", "会话"),
}

# Sentences more than one entry says.
_SIGN_IN = Text("sign in again: `agent signin`", "重新签到：`agent signin`")
_SIGN_IN_NOW = Text("sign in: agent signin", "签到：agent signin")
_AGENT_SIGNIN = Text("`agent signin`", "运行 `agent signin`")
_SIGNS_IN_ITSELF = Text(
    "`agent signin`. The agent signs in by itself after a 97 and when its periodic check "
    "finds this",
    "运行 `agent signin`。收到 97 或定期检查发现时本程序会自动签到",
)
_NO_MODULE = Text("no card module", "无加密模块")
_TAMPERED = Text("the card module reports tampering: it is locked", "加密模块报告防拆触发，已锁定")
_OUT_OF_SERVICE = Text(
    "take the terminal out of service and call support", "停止使用该终端并联系客服"
)
_UNREACHABLE = Text("the card module does not answer: {error}", "加密模块无响应")
_CHECK_CABLE = Text(
    "check the module's cable and power and that {url} is the right device (module.url)",
    "检查加密模块连线和电源，并确认 {url} 是正确的设备（module.url）",
)
_FREE_UP = Text("free space on the disk holding {directory}", "清理 {directory} 所在磁盘的空间")
_SET_ASIDE = Text(
    "damaged state set aside: {names}; the agent runs on fresh files",
    "损坏的状态文件已移开：{names}；本程序已使用新文件运行",
)
_SETTLE = Text(
    "settle the reversals of the damaged journal with the acquirer, then move the file(s) away",
    "与收单机构核对损坏日志中的冲正后，将这些文件移走",
)
_REGISTER = Text("call acquirer support to register the terminal", "请联系收单机构客服登记终端")

CATALOGUE: dict[str, Entry] = {
    # ---------------------------------------------------------------- any check
    "<check>.ok": Entry(
        meaning=Text("the check found nothing wrong", "该项检查正常"),
        action=Text("nothing", "无需处理"),
    ),
    "<check>.skip": Entry(
        meaning=Text(
            "the check had nothing to look at (no card module configured, no host configured, "
            "no time reference yet); its summary says which",
            "该项检查无可检查的内容（未配置加密模块、未配置主机或尚无参考时间），摘要中说明原因",
        ),
        action=Text(
            "see the check its summary names (usually provisioning)",
            "查看摘要中提到的相关检查项（通常是终端参数）",
        ),
    ),
    "<check>.timeout": Entry(
        summary=Text("did not finish within {deadline} s", "未在 {deadline} 秒内完成"),
        remedy=Text(
            "run the self-check again; if it repeats, call support",
            "再次运行自检；如仍出现请联系客服",
        ),
        meaning=Text(
            "the check did not finish within `selftest.deadline` seconds",
            "该项检查未在 `selftest.deadline` 秒内完成",
        ),
        action=Text(
            "run the self-check again; if it repeats, call support with `agent journal`",
            "再次运行自检；如仍出现，请将 `agent journal` 的输出提供给客服",
        ),
    ),
    "<check>.check-error": Entry(
        summary=Text("the check itself failed: {error}", "检查程序出错"),
        meaning=Text(
            "the check itself failed (a fault in the agent); the other checks are unaffected",
            "检查程序本身出错（本程序的缺陷），不影响其他检查项",
        ),
        action=Text(
            "report it with the detail line and the agent's version (`agent --version`)",
            "将详细信息和版本号（`agent --version`）报告给供应商",
        ),
    ),
    # ---------------------------------------------------------------- provisioning
    "provisioning.ok": Entry(
        summary=Text(
            "TID {tid}, MID {mid}, host {hosts}", "终端号 {tid}，商户号 {mid}，主机 {hosts}"
        )
    ),
    "provisioning.unprovisioned": Entry(
        summary=Text("not provisioned: {missing} missing", "未配置终端参数：缺少 {missing}"),
        remedy=Text(
            "run `agent provision` (asks the TMS), or set terminal.tid, terminal.mid and "
            "host.primary in /etc/pos-agent/agent.toml",
            "运行 `agent provision`（从 TMS 下载参数），或在 /etc/pos-agent/agent.toml 中设置 "
            "terminal.tid、terminal.mid 和 host.primary",
        ),
        meaning=Text(
            "the terminal has no TID, MID or host (`terminal.tid`, `terminal.mid`, "
            "`host.primary`): it cannot take payments yet. The agent still runs and waits",
            "未配置终端号、商户号或主机地址（`terminal.tid`、`terminal.mid`、`host.primary`），"
            "终端尚不能收款；本程序仍在运行并等待配置",
        ),
        action=Text(
            "`agent provision` (asks the TMS by the card module's serial), or set the three keys "
            "in `/etc/pos-agent/agent.toml` and `systemctl reload pos-agent`",
            "运行 `agent provision`（按加密模块序列号从 TMS 下载参数），或在 "
            "`/etc/pos-agent/agent.toml` 中设置这三项后执行 `systemctl reload pos-agent`",
        ),
    ),
    "provisioning.differs-from-tms": Entry(
        summary=Text(
            "the configuration differs from the TMS: {differences}",
            "终端参数与 TMS 不一致：{differences}",
        ),
        remedy=Text(
            "re-provision from the TMS: `agent provision`", "从 TMS 重新下载参数：`agent provision`"
        ),
        meaning=Text(
            "the TID, MID or hosts here are not the ones the TMS holds for this card module",
            "本机的终端号、商户号或主机地址与 TMS 为该加密模块登记的不一致",
        ),
        action=Text(
            "`agent provision`. After a 97 the agent re-provisions by itself",
            "运行 `agent provision` 重新下载参数。收到 97 时本程序会自动重新下载",
        ),
    ),
    "provisioning.changed-since-signin": Entry(
        summary=Text(
            "TID {tid}, MID {mid}, host {hosts}; the last sign-in was as TID {signed_tid}, "
            "MID {signed_mid}",
            "终端号 {tid}，商户号 {mid}，主机 {hosts}；上次签到使用的是 TID {signed_tid}、"
            "MID {signed_mid}",
        ),
        remedy=_SIGN_IN,
        meaning=Text(
            "the TID or MID changed since the last sign-in, which was made as another terminal",
            "终端号或商户号在上次签到后已更改，上次签到使用的是另一组号码",
        ),
        action=Text("`agent signin`", "运行 `agent signin` 重新签到"),
    ),
    # ---------------------------------------------------------------- clock
    "clock.ok": Entry(
        summary=Text(
            "clock within {seconds} s of the {source}", "时钟与{source}相差 {seconds} 秒以内"
        )
    ),
    "clock.skip": Entry(
        summary=Text(
            "no time reference: no host time yet, module RTC unread, no time sync, no NTP server",
            "无参考时间：尚无主机时间，未读到模块时钟，无时间同步，未配置 NTP",
        )
    ),
    "clock.clock-off": Entry(
        summary=Text(
            "clock is {seconds} s {direction} of the {source}",
            "终端时钟比{source}{direction} {seconds} 秒",
        ),
        remedy=Text(
            "correct the clock (the sync-clock hook does it when the agent recovers), then sign "
            "in again",
            "校正终端时钟（自动恢复时由 sync-clock 钩子完成），然后重新签到",
        ),
        meaning=Text(
            "the terminal's clock is more than `clock.warn_after` seconds (60; a failure over "
            "`clock.fail_after`, 300) away from a reference: the host's time in its last answer, "
            "the card module's clock, the system's time synchronisation (timesyncd, chrony) or "
            "NTP. Hosts refuse terminals whose time is far off",
            "终端时钟与参考时间（主机应答中的时间、加密模块时钟、系统时间同步服务或 NTP）相差超过 "
            "`clock.warn_after` 秒（60 秒；超过 `clock.fail_after` 即 300 秒为失败）。"
            "时间偏差过大的终端会被主机拒绝",
        ),
        action=Text(
            "correct the clock, then `agent signin`. After a 97 the agent runs the vendor's "
            "`sync-clock` hook itself. Check that time synchronisation runs and reaches its "
            "servers",
            "校正终端时钟后运行 `agent signin`。收到 97 时本程序会调用厂商的 `sync-clock` "
            "钩子自动校时。请确认时间同步服务正常运行并能连接其服务器",
        ),
    ),
    "clock:host": Entry(summary=Text("host", "主机")),
    "clock:module-rtc": Entry(summary=Text("module RTC", "模块时钟")),
    "clock:time-sync": Entry(summary=Text("time sync ({service})", "时间同步服务（{service}）")),
    "clock:ntp": Entry(summary=Text("NTP {server}", "NTP 服务器 {server}")),
    "clock:ahead": Entry(summary=Text("ahead", "快")),
    "clock:behind": Entry(summary=Text("behind", "慢")),
    # ---------------------------------------------------------------- network
    "network.ok": Entry(summary=Text("the host answers the echo test", "主机回应测试报文")),
    "network.ok:with-backup": Entry(
        summary=Text("the host and its backup answer the echo test", "主机和备用主机回应测试报文")
    ),
    "network.skip": Entry(summary=Text("no host configured", "未配置主机")),
    "network.primary-down": Entry(
        summary=Text(
            "the primary host {primary} does not answer properly; the backup does",
            "主机 {primary} 无正常回应，备用主机正常",
        ),
        remedy=Text(
            "the agent fails over to the backup; tell the acquirer the primary is down",
            "本程序将切换到备用主机；请通知收单机构主机故障",
        ),
        meaning=Text(
            "the primary host does not answer properly (no connection, TLS failure, no echo "
            "answer, or an echo refused); the backup does",
            "主机无正常回应（无法连接、TLS 失败、测试报文无应答或被拒绝），备用主机正常",
        ),
        action=Text(
            "nothing on the terminal: the agent fails over to the backup. Tell the acquirer the "
            "primary is down",
            "终端无需处理，本程序会切换到备用主机。请通知收单机构主机故障",
        ),
    ),
    "network.backup-down": Entry(
        summary=Text(
            "the backup host {backup} does not answer: {failure}",
            "备用主机 {backup} 无正常回应：{failure}",
        ),
        remedy=Text("tell the acquirer the backup host is down", "通知收单机构备用主机不可用"),
        meaning=Text("the primary answers, the backup does not", "主机正常，备用主机无正常回应"),
    ),
    "network.host-unreachable": Entry(
        summary=Text("no host answers: {error}", "所有主机均无回应"),
        remedy=Text(
            "check the cable or SIM, the APN and the host address; call the acquirer if the host "
            "is down",
            "检查网线或 SIM 卡、APN 和主机地址；如主机故障请联系收单机构",
        ),
        meaning=Text(
            "no host answers. The detail says how far it got for each host: network link, route, "
            "DNS, TCP connection, TLS handshake, echo test",
            "所有主机均无回应。详细信息中列出每台主机检查到哪一步：网络连接、路由、DNS、TCP 连接、"
            "TLS 握手、测试报文",
        ),
        action=Text(
            "check the cable or SIM card, the APN and `host.primary`/`host.backup`; call the "
            "acquirer if its host is down. A silent host never makes the terminal unregistered",
            "检查网线或 SIM 卡、APN 以及 `host.primary`/`host.backup`；如主机故障请联系收单机构。"
            '主机无回应不会使终端变为"未登记"状态',
        ),
    ),
    "network.echo-refused": Entry(
        summary=Text(
            "host reachable; its echo answer is {code}", "主机可达；测试报文应答码 {code}"
        ),
        meaning=Text(
            "a host is reachable but refuses the echo test with a code (shown). The network is "
            "fine; the code is about the terminal",
            "主机可达，但测试报文被拒绝（显示应答码）。网络正常，应答码与终端本身有关",
        ),
        action=Text(
            "look at the other checks and `agent status`; `agent explain CODE` says what the code "
            "means",
            "查看其他检查项和 `agent status`；用 `agent explain 应答码` 查看含义",
        ),
    ),
    # ---------------------------------------------------------------- keys
    "keys.ok": Entry(
        summary=Text(
            "{family} keys: TMK, PIK and MAK present; KCVs match the last sign-in; MAC self-test "
            "passed",
            "{family} 密钥：TMK、PIK、MAK 齐全；校验值与上次签到一致；MAC 自检通过",
        )
    ),
    "keys.skip": Entry(summary=_NO_MODULE),
    "keys.tmk-absent": Entry(
        summary=Text("no master key (TMK) in slot {slot}", "密钥槽 {slot} 中没有主密钥（TMK）"),
        remedy=Text(
            "the acquirer must inject the master key: call support",
            "需由收单机构灌装主密钥：请联系客服",
        ),
        meaning=Text(
            "the card module's key slot (`module.key_slot`) has no master key (TMK). Nothing can "
            "be signed in without it",
            "加密模块的密钥槽（`module.key_slot`）中没有主密钥（TMK），无法签到",
        ),
        action=Text(
            "where `keys.tmk_download` is set, the agent downloads the master key from the "
            "acquirer and signs in by itself (the remedy line says so). Otherwise the master key "
            "must be injected: call support. The terminal is unregistered until then",
            "如已设置 `keys.tmk_download`，本程序会从收单机构远程下载主密钥并自动签到"
            "（处理建议中会注明）。否则需重新灌装主密钥，请联系客服；在此之前终端处于未登记状态",
        ),
    ),
    "keys.tmk-absent:download": Entry(
        remedy=Text(
            "the agent will download the master key from the acquirer (keys.tmk_download = "
            "{source}) and sign in",
            "代理程序将从收单机构远程下载主密钥（keys.tmk_download = {source}）并签到",
        )
    ),
    "keys.tmk-absent:download-failed": Entry(
        remedy=Text(
            "{reason}; the agent tries again every keys.tmk_download_every; if it keeps failing, "
            "the master key must be injected: call support",
            "{reason}；代理程序按 keys.tmk_download_every 定期重试；"
            "如持续失败，需重新灌装主密钥，请联系客服",
        )
    ),
    "keys.keys-absent": Entry(
        summary=Text("no working keys: {absent} absent", "工作密钥缺失：{absent}"),
        remedy=_SIGN_IN,
        meaning=Text(
            "the working keys (PIK or MAK) are not in the module",
            "模块中缺少工作密钥（PIK 或 MAK）",
        ),
        action=_SIGNS_IN_ITSELF,
    ),
    "keys.never-signed-in": Entry(
        summary=Text("working keys present but no sign-in is on record", "有工作密钥但无签到记录"),
        remedy=_SIGN_IN,
        meaning=Text(
            "working keys are in the module but the journal has no sign-in (a new journal, or a "
            "module that came with keys)",
            "模块中有工作密钥，但日志中没有签到记录（新日志，或模块自带密钥）",
        ),
        action=_AGENT_SIGNIN,
    ),
    "keys.kcv-mismatch": Entry(
        summary=Text(
            "the module's keys are not those of the last sign-in: {differing}",
            "模块中的密钥与上次签到不符：{differing}",
        ),
        remedy=_SIGN_IN,
        meaning=Text(
            "the module's working keys are not the ones the last sign-in loaded: their check "
            "values (KCVs) differ (the module was swapped or reset, or something else loaded "
            "keys)",
            "模块中的工作密钥与上次签到下发的不符，校验值（KCV）不一致"
            "（模块被更换、复位或被其他程序灌装）",
        ),
        action=_SIGNS_IN_ITSELF,
    ),
    "keys.mac-selftest": Entry(
        summary=Text("the MAC self-test failed: {error}", "MAC 自检失败"),
        remedy=_SIGN_IN,
        meaning=Text(
            "the module could not compute a MAC, or its MAC over the whole message differs from "
            "its MAC from the agent's XOR block",
            "模块无法计算 MAC，或对整段报文计算的 MAC 与对异或块计算的不一致",
        ),
        action=Text(
            "`agent signin`; if the two MACs still differ, report the module to the vendor",
            "运行 `agent signin`；如两种 MAC 仍不一致，请将模块报修",
        ),
    ),
    "keys.mac-selftest:macs-differ": Entry(
        summary=Text(
            "the module's MAC over the message differs from its MAC over our XOR block",
            "模块对整段报文和对异或块计算的 MAC 不一致",
        ),
        remedy=Text("report the module to the vendor", "请将模块报修"),
    ),
    "keys.tampered": Entry(
        summary=_TAMPERED,
        remedy=_OUT_OF_SERVICE,
        meaning=Text(
            "the module refused to show its keys because it is tampered and locked (see "
            "`module.tampered`)",
            "模块因防拆触发已锁定，拒绝查询密钥（见 `module.tampered`）",
        ),
    ),
    "keys.module-unreachable": Entry(
        summary=_UNREACHABLE,
        remedy=_CHECK_CABLE,
        meaning=Text(
            "the module did not answer when asked for its keys (see `module.module-unreachable`)",
            "查询密钥时加密模块无响应（见 `module.module-unreachable`）",
        ),
        action=Text(
            "check the module's cable and power, and `module.url`",
            "检查加密模块连线和电源，以及 `module.url` 设置",
        ),
    ),
    # ---------------------------------------------------------------- module
    "module.ok": Entry(
        summary=Text(
            "module answers: serial {serial}, model {model}, firmware {firmware}",
            "模块正常：序列号 {serial}，型号 {model}，固件 {firmware}",
        )
    ),
    "module.skip": Entry(summary=_NO_MODULE),
    "module.tampered": Entry(
        summary=_TAMPERED,
        remedy=_OUT_OF_SERVICE,
        meaning=Text(
            "the card module reports tampering and has locked itself: it signs, MACs and reads "
            "PINs no more. The terminal is unregistered at once",
            "加密模块报告防拆触发并已自锁，不再签到、计算 MAC 或读取密码；终端立即变为未登记状态",
        ),
        action=Text(
            "take the terminal out of service and call support. Nothing on the terminal repairs it",
            "停止使用该终端并联系客服，现场无法修复",
        ),
    ),
    "module.module-unreachable": Entry(
        summary=_UNREACHABLE,
        remedy=_CHECK_CABLE,
        meaning=Text(
            "the card module does not answer on `module.url`", "加密模块在 `module.url` 上无响应"
        ),
        action=Text(
            "check the module's cable and power and that `module.url` is the right device. A "
            "module on another serial port also needs the unit's `DeviceAllow=` for it",
            "检查加密模块连线和电源，确认 `module.url` 为正确的设备。模块接在其他串口时，"
            "还需在服务单元中为其添加 `DeviceAllow=`",
        ),
    ),
    "module.module-changed": Entry(
        summary=Text("the card module changed since last seen", "加密模块与上次记录不同"),
        remedy=Text("a new module needs its master key and a sign-in", "新模块需灌装主密钥并签到"),
        meaning=Text(
            "the module's serial, model or firmware is not what was recorded last: the module "
            "was replaced or its firmware updated",
            "模块的序列号、型号或固件与上次记录的不同：模块已更换或固件已升级",
        ),
        action=Text(
            "a new module needs its master key and a sign-in; its TUSN is new too, and must be "
            "reported to the acquirer",
            "新模块需灌装主密钥并签到；其终端硬件序列号也已改变，需向收单机构报备",
        ),
    ),
    # ---------------------------------------------------------------- registration
    "registration.ok": Entry(
        summary=Text(
            "TUSN {tusn}: field 59 A2 as the acquirer expects it",
            "终端硬件序列号 {tusn}：59 域 A2 符合收单要求",
        )
    ),
    "registration.skip": Entry(
        summary=Text("no card module: TUSN not asked", "无加密模块：未读取终端硬件序列号")
    ),
    "registration.skip:not-asked": Entry(
        summary=Text(
            "TUSN not read: {error} (the module check says why)",
            "未能读取终端硬件序列号（原因见加密模块检查项）",
        )
    ),
    "registration.tusn-absent": Entry(
        summary=Text(
            "the card module has no terminal hardware serial number (TUSN) to give",
            "加密模块无法提供终端硬件序列号（TUSN）",
        ),
        remedy=Text(
            "have the manufacturer inject the TUSN key, or use a payment app that sends A2 "
            '(registration.tusn = "app")',
            '请厂商灌装 TUSN 密钥，或使用自行上送 A2 的收款应用（registration.tusn = "app"）',
        ),
        meaning=Text(
            "the card module gives no TUSN (no TUSN key injected, or it does not know the command)",
            "加密模块无法提供终端硬件序列号（未灌装 TUSN 密钥或不支持该指令）",
        ),
        action=Text(
            "have the manufacturer inject the TUSN key, or use a payment app that builds A2",
            "请厂商灌装 TUSN 密钥，或使用自行生成 A2 的收款应用",
        ),
    ),
    "registration.tusn-malformed": Entry(
        summary=Text(
            "the card module's TUSN answer is malformed: {problem}",
            "加密模块返回的终端硬件序列号格式错误：{problem}",
        ),
        remedy=Text(
            "call the terminal's manufacturer: the module's TUSN is wrong",
            "请联系终端厂商：加密模块中的序列号有误",
        ),
        meaning=Text(
            "the card module's TUSN is not 6 manufacturer digits, 2 device-type digits and a "
            "serial",
            "加密模块的序列号不是 6 位厂商编号、2 位设备类型加序列号的格式",
        ),
        action=Text("call the terminal's manufacturer", "请联系终端厂商"),
    ),
    "registration.tusn-differs-from-tms": Entry(
        summary=Text(
            "the module's TUSN {tusn} is not the one the TMS holds ({tms_tusn})",
            "加密模块的序列号 {tusn} 与 TMS 登记的（{tms_tusn}）不一致",
        ),
        remedy=Text(
            "have the acquirer report TUSN {tusn} (the module was probably swapped)",
            "请收单机构为序列号 {tusn} 办理报备（加密模块可能已更换）",
        ),
        meaning=Text(
            "the card module's TUSN is not the one the TMS holds for this terminal (a module "
            "swapped, or a record not updated)",
            "加密模块的序列号与 TMS 记录不一致（更换了模块或记录未更新）",
        ),
        action=Text(
            "have the acquirer report the module's TUSN, and the TMS record updated",
            "请收单机构为模块的序列号报备，并更新 TMS 记录",
        ),
    ),
    "registration.tusn-not-reported": Entry(
        summary=Text(
            "the acquirer has not reported TUSN {tusn} to UnionPay{reason}",
            "收单机构尚未为序列号 {tusn} 向银联报备{reason}",
        ),
        remedy=Text(
            "have TUSN {tusn} reported to the acquirer before the first sale",
            "首笔交易前请让收单机构为序列号 {tusn} 办理报备",
        ),
        meaning=Text(
            "the acquirer's own check (the registration-check hook) says the TUSN is not "
            "reported to UnionPay",
            "收单机构的查询（registration-check 钩子）显示该序列号未向银联报备",
        ),
        action=Text("have the TUSN reported before the first sale", "首笔交易前请办理报备"),
    ),
    "registration:acquirer-says": Entry(summary=Text(": {said}", "：{said}")),
    "registration.a2-missing": Entry(
        summary=Text(
            "the last purchase went to the acquirer without field 59 A2 (the terminal hardware "
            "serial number)",
            "最近一笔消费上送时缺少 59 域 A2（终端硬件序列号）",
        ),
        remedy=Text(
            'set registration.tusn = "module", or update the payment app',
            '设置 registration.tusn = "module"，或升级收款应用',
        ),
        meaning=Text(
            "a purchase or pre-authorisation went to the acquirer without field 59 A2 (the "
            "TUSN), which CUP has required since 2017",
            "消费或预授权上送时缺少 59 域 A2（终端硬件序列号），银联自 2017 年起要求上送",
        ),
        action=Text(
            'set registration.tusn = "module" so the agent adds it, or update the payment app',
            '设置 registration.tusn = "module" 由代理补充，或升级收款应用',
        ),
    ),
    "registration.a2-missing:off": Entry(
        summary=Text(
            'field 59 A2 is off (registration.tusn = "off"): acquirers under the CUP rules '
            "refuse purchases without the terminal hardware serial number",
            '59 域 A2 已关闭（registration.tusn = "off"）：按银联规定收单机构会拒绝'
            "未上送终端硬件序列号的消费",
        ),
        remedy=Text(
            'set registration.tusn = "module" (or "app" if the payment app sends A2)',
            '设置 registration.tusn = "module"（收款应用自行上送 A2 时设为 "app"）',
        ),
    ),
    "registration.location-unavailable": Entry(
        summary=Text(
            "no location for field 59 A5 ({problem}); the acquirer wants one",
            "无法取得 59 域 A5 所需的位置信息（{problem}）",
        ),
        remedy=Text(
            "install a location hook (ModemManager or gpsd; see the examples) and check the "
            "modem or GPS",
            "安装位置钩子（ModemManager 或 gpsd，见示例）并检查调制解调器或 GPS",
        ),
        meaning=Text(
            "the acquirer wants the terminal's location (field 59 A5) and no location source "
            "answers",
            "收单机构要求上送位置信息（59 域 A5），但无法取得位置",
        ),
        action=Text(
            "install a location hook (ModemManager or gpsd) and check the modem or GPS",
            "安装位置钩子（ModemManager 或 gpsd）并检查调制解调器或 GPS",
        ),
    ),
    # the registration check on the acquirer's refusals of requests since yesterday
    "registration:refused-requests": Entry(
        summary=Text(
            "{count} request(s) refused for field 59 since yesterday, the last at {when}: {told}",
            "昨日以来 {count} 笔交易因 59 域被拒，最近一笔于 {when}：{told}",
        ),
        remedy=Text(
            "see the cause above; the terminal itself is registered",
            "请按上述原因处理；终端本身已登记",
        ),
    ),
    # ---------------------------------------------------------------- refused requests
    # What the merchant is told of one refused request: never "register the terminal", which is
    # registered (its sign-in was approved).
    "registration.tusn-refused": Entry(
        # short enough that field 63 (163 characters) holds it whole after the finding code
        summary=Text(
            "the acquirer refused {code} for TUSN {tusn}: have it reported to the acquirer; the "
            "terminal itself is registered",
            "收单机构拒绝此笔交易（{code}）：终端硬件序列号 {tusn} 未报备。"
            "请让收单机构为该序列号办理报备（报送银联）；终端本身已登记",
        ),
        meaning=Text(
            "the acquirer refused a purchase or pre-authorisation that carried a well-formed "
            "terminal hardware serial number (TUSN, field 59 A2): it does not know this TUSN",
            "收单机构拒绝了带有格式正确的终端硬件序列号（59 域 A2）的消费或预授权：该序列号未报备",
        ),
        action=Text(
            "have the TUSN that `agent selftest` shows reported (报备) to the acquirer and by it "
            "to UnionPay; the terminal itself is registered, other requests go on",
            "请让收单机构为 `agent selftest` 显示的序列号办理报备（报送银联）；"
            "终端本身已登记，其他交易不受影响",
        ),
    ),
    "registration.a2-missing:refused-request": Entry(
        summary=Text(
            "the acquirer refused this request with {code}: it carried no terminal hardware "
            "serial number (field 59 A2). Update the payment app, or set registration.tusn = "
            '"module" so the agent adds it',
            "收单机构拒绝了此笔交易（{code}）：交易未上送终端硬件序列号（59 域 A2）。"
            '请升级收款应用，或设置 registration.tusn = "module" 由代理补充',
        )
    ),
    "registration.a2-malformed": Entry(
        summary=Text(
            "the acquirer refused this request with {code}: the payment app's terminal hardware "
            "serial number (field 59 A2) is malformed ({problem}). Have the payment app fixed",
            "收单机构拒绝了此笔交易（{code}）：收款应用上送的终端硬件序列号（59 域 A2）格式错误"
            "（{problem}）。请联系收款应用厂商修正",
        ),
        meaning=Text(
            "the payment app's field 59 A2 is not well formed (a sub-usage missing, a wrong "
            "length, a ciphertext that is not 8 upper-case hex digits)",
            "收款应用上送的 59 域 A2 格式错误（缺少子用法、长度错误或密文不是 8 位大写十六进制）",
        ),
        action=Text(
            'have the payment app fixed, or let the agent build A2 (registration.tusn = "module" '
            "and an app that sends none)",
            '请收款应用厂商修正，或由代理生成 A2（registration.tusn = "module"，应用不上送 A2）',
        ),
    ),
    "request.refused": Entry(
        summary=Text(
            "the acquirer refused this request with {code} ({meaning}) although the terminal is "
            "signed in; other requests go on. Ask the acquirer whether this transaction type is "
            "enabled for the terminal",
            "终端已签到，但收单机构拒绝了此笔交易（{code}，{meaning}），其他交易不受影响。"
            "请向收单机构确认终端是否开通此交易类型",
        ),
        meaning=Text(
            "the acquirer refused a request of a kind that carries no TUSN although the terminal "
            "is signed in; other requests go on",
            "终端已签到，但收单机构拒绝了此笔（不带终端硬件序列号的）交易，其他交易不受影响",
        ),
        action=Text(
            "ask the acquirer whether this transaction type is enabled for the terminal",
            "请向收单机构确认终端是否开通此交易类型",
        ),
    ),
    # ------------------------------------------- the agent's own answers (field 63, section 4)
    "request.format": Entry(
        meaning=Text(
            "the payment app's message does not decode under the wire profile (a bad bitmap, "
            "length or value): answered 30, nothing was sent",
            "收款应用的报文无法按报文格式配置解析（位图、长度或取值错误）：已应答 30，未上送",
        ),
        action=Text(
            "have the payment app fixed; `agent decode HEX` shows where the message breaks",
            "请收款应用厂商修正；`agent decode HEX` 可显示报文出错的位置",
        ),
    ),
    "request.unclassified": Entry(
        meaning=Text(
            "the request fits no message class the agent knows (by MTI, processing code, 25 and "
            "60): answered 30, never sent",
            "请求不属于本程序已知的任何交易类型（按消息类型、处理码、25 域和 60 域判断）："
            "已应答 30，未上送",
        ),
        action=Text(
            "have the payment app send the transaction as CUP defines it; the answer's field 63 "
            "names the fields the agent read",
            "请收款应用按银联规范发送该交易；应答 63 域列出了本程序读取的各域",
        ),
    ),
    "request.agent-error": Entry(
        meaning=Text(
            "answering the request failed inside the agent (a fault in the agent): answered 96",
            "本程序处理该请求时内部出错（本程序的缺陷）：已应答 96",
        ),
        action=Text(
            "report it with the log lines of that moment and the agent's version "
            "(`agent --version`)",
            "将当时的日志和版本号（`agent --version`）报告给供应商",
        ),
    ),
    "request.not-encodable": Entry(
        meaning=Text(
            "the request cannot be encoded for the host under the wire profile (a value the "
            "acquirer's format does not take): answered 96, never sent",
            "请求无法按报文格式配置编码上送（取值不符合收单机构的格式）：已应答 96，未上送",
        ),
        action=Text(
            "check `wire.profile` against the acquirer's specification; have the payment app's "
            "values fixed",
            "按收单机构规范检查 `wire.profile`，并请收款应用修正取值",
        ),
    ),
    "request.answer-not-encodable": Entry(
        meaning=Text(
            "the host's answer cannot be encoded for the payment app under the wire profile: the "
            "app gets 96 instead, and an approval it did not get is reversed",
            "主机应答无法按报文格式配置编码给收款应用：应用收到 96，未送达的批准交易将被冲正",
        ),
        action=Text(
            "check `wire.profile` against the acquirer's specification (a field the host sends "
            "longer than the profile allows)",
            "按收单机构规范检查 `wire.profile`（主机返回的某个域超过了配置允许的长度）",
        ),
    ),
    "request.original-unknown": Entry(
        meaning=Text(
            "a reversal, void or completion names a request that never went through the agent "
            "(field 61 or 11, in the batch it names): answered 25, not sent",
            "冲正、撤销或完成交易引用的原交易未经本程序发送（按 61 域或 11 域及其批次号查找）："
            "已应答 25，未上送",
        ),
        action=Text(
            "check the original's STAN and batch in the payment app; `agent journal` lists what "
            "went through the agent",
            "请在收款应用中核对原交易的流水号和批次号；`agent journal` 列出经本程序发送的交易",
        ),
    ),
    "request.original-reversal-pending": Entry(
        meaning=Text(
            "the request this one refers to is being reversed and the host has not confirmed it "
            "yet: answered 96, not sent",
            "该请求引用的原交易正在冲正，主机尚未确认：已应答 96，未上送",
        ),
        action=Text(
            "try again in a minute; the agent retries the reversal by itself (`agent status` "
            "shows the reversals queued)",
            "请一分钟后重试；本程序会自动重发冲正（`agent status` 显示排队的冲正）",
        ),
    ),
    "request.original-reversed": Entry(
        meaning=Text(
            "the request this reversal names was reversed by the agent already and the host "
            "confirmed it: answered 00 without going to the host again",
            "该冲正所指的原交易已由本程序冲正并经主机确认：直接应答 00，不再上送主机",
        ),
        action=Text("nothing: the money was never taken", "无需处理：该笔款项未被扣取"),
    ),
    "request.original-not-at-host": Entry(
        meaning=Text(
            "the request this reversal names was reversed by the agent already, and the host "
            "answered that it had no such transaction (12 or 25): answered 25 without going to "
            "the host again. The agent sends its reversal once more later, in case the original "
            "reached the host after it",
            "该冲正所指的原交易已由本程序冲正，主机答复无此交易（12 或 25）：直接应答 25，不再上送"
            "主机。本程序稍后会再发一次冲正，以防原交易晚于冲正到达主机",
        ),
        action=Text("nothing: no money was taken", "无需处理：未扣取任何款项"),
    ),
    "request.original-reversal-disputed": Entry(
        meaning=Text(
            "the host refused the agent's reversal of the request this one names: answered 22, "
            "not sent",
            "主机拒绝了本程序对该原交易的冲正：已应答 22，未上送",
        ),
        action=Text(
            "settle the transaction with the acquirer; `agent journal` shows the reversal and "
            "the host's answer",
            "请与收单机构核对该笔交易；`agent journal` 显示冲正及主机应答",
        ),
    ),
    "reversal.pending": Entry(
        meaning=Text(
            "a reversal the host has not confirmed yet goes before the next sale: the sale was "
            "answered 96 and not sent. After `reversal.attempts` failed tries the reversal is "
            "retried in the background and sales go ahead",
            "主机尚未确认的冲正须在下一笔消费前完成：该笔消费已应答 96，未上送。冲正连续失败 "
            "`reversal.attempts` 次后转为后台重试，消费照常进行",
        ),
        action=Text(
            "try the sale again in a moment; `agent status` shows the reversals queued",
            "请稍后重试该笔消费；`agent status` 显示排队的冲正",
        ),
    ),
    "reversal.refused": Entry(
        meaning=Text(
            "the host refused the reversal that goes before this request because it lost the "
            "terminal's session or keys: the request was not sent; the agent signs in again and "
            "the reversal goes first",
            "主机因终端会话或密钥失效拒绝了须先发送的冲正：该请求未上送；本程序会重新签到并"
            "先发送冲正",
        ),
        action=Text(
            "try the request again in a moment; if it repeats, `agent selftest`",
            "请稍后重试；如仍出现，运行 `agent selftest`",
        ),
    ),
    "recovery.pin-again": Entry(
        meaning=Text(
            "the host refused a request with a PIN (97, a lost session or keys) and the repair "
            "signed in again: the sign-in replaced the PIN key the PIN block is encrypted "
            "under, so the request is not sent again (the host would read a wrong PIN): "
            "answered 96",
            "主机拒绝了带密码的请求（97、会话或密钥失效），修复时重新签到：签到更换了加密该"
            "密码块的 PIN 密钥，故不再重发该请求（主机会读出错误的密码）：已应答 96",
        ),
        action=Text(
            "do the sale again: the cardholder enters the PIN again",
            "重新发起交易：持卡人重新输入密码",
        ),
    ),
    "recovery.still-running": Entry(
        meaning=Text(
            "a repair of the terminal (a sign-in, re-provisioning, a master-key download: after "
            "the host refused this request or another with 97 or a lost session or keys, or the "
            "start-up sign-in) did not end within `recovery.deadline`: answered 96, not sent "
            "(again); the repair goes on by itself",
            "终端修复（签到、重新下发参数、主密钥下载：因主机以 97 或会话、密钥失效拒绝了本请求"
            "或其他请求，或启动时的签到）未在 `recovery.deadline` 内完成：已应答 96，未（再）上送；"
            "修复在后台继续",
        ),
        action=Text(
            "try the request again in a moment; `agent status` shows whether the terminal is "
            "registered again, `agent journal` the repair's steps",
            "请稍后重试；`agent status` 显示终端是否已恢复登记，`agent journal` 显示修复的各步骤",
        ),
    ),
    "storage.journal-slow": Entry(
        meaning=Text(
            "the journal did not record the request or its answer within its patience (10 s): "
            "the disk may be frozen or failing. A request not recorded is not sent; an answer "
            "not recorded is reversed",
            "交易日志未在限定时间（10 秒）内记录请求或应答，磁盘可能卡死或故障。"
            "未记录的请求不上送；未记录的应答将被冲正",
        ),
        action=Text(
            "`agent selftest --only storage`; if it repeats, have the terminal's storage checked",
            "运行 `agent selftest --only storage`；如反复出现，请检修终端存储",
        ),
    ),
    "gateway.workers-busy": Entry(
        meaning=Text(
            "every worker thread was busy with earlier requests, each held up by the journal's "
            "disk or the card module, for the whole of the sale's patience: answered 96, never "
            "sent",
            "所有工作线程均忙于处理之前的交易（受交易日志磁盘或加密模块拖慢），超出限定时间："
            "已应答 96，未上送",
        ),
        action=Text(
            "`agent selftest --only storage,module`; the journal's log lines say which of the two "
            "held the earlier requests up",
            "运行 `agent selftest --only storage,module`；日志中说明了之前的交易受哪一方拖慢",
        ),
    ),
    "module.slow": Entry(
        meaning=Text(
            "the card module did not answer a request's commands (field 59's TUSN, its MAC, the "
            "answer's MAC check) within the sale's patience: answered 96; a request not sent yet "
            "is not sent, an answer not checked yet is reversed. The module is slow, or its line "
            "is busy with many requests at once",
            "加密模块未在限定时间内应答交易所需的指令（59 域的 TUSN、MAC、应答的 MAC 校验）："
            "已应答 96；尚未上送的请求不上送，尚未校验的应答将被冲正。模块响应缓慢，"
            "或其串口同时忙于多笔交易",
        ),
        action=Text(
            "`agent selftest --only module`; if it repeats with one sale at a time, have the "
            "module or its cable checked",
            "运行 `agent selftest --only module`；如单笔交易时也反复出现，请检修加密模块或其连线",
        ),
    ),
    "module.mac-failed": Entry(
        meaning=Text(
            "the card module did not compute the request's MAC (it does not answer, or refuses: "
            "no MAC key, a locked module): answered 96, never sent",
            "加密模块未能计算请求的 MAC（模块无响应或拒绝：无 MAC 密钥、模块已锁定）："
            "已应答 96，未上送",
        ),
        action=Text(
            "`agent selftest --only module,keys`; the answer's field 63 says what the module said",
            "运行 `agent selftest --only module,keys`；应答 63 域说明了模块返回的内容",
        ),
    ),
    "host.no-answer": Entry(
        meaning=Text(
            "the request went to the host and no usable answer came back (a timeout, the "
            "connection lost): answered 98 (96 during a repair), and a financial request is "
            "reversed",
            "请求已上送主机但未收到有效应答（超时或连接中断）：已应答 98（修复过程中为 96），"
            "金融类交易将被冲正",
        ),
        action=Text(
            "`agent selftest --only network`; if the network is fine, the acquirer's host is slow "
            "or down",
            "运行 `agent selftest --only network`；如网络正常，则是收单机构主机缓慢或故障",
        ),
    ),
    "host.response-mac-wrong": Entry(
        meaning=Text(
            "the host's answer failed the MAC check: the app was answered A0, and a financial "
            "request is reversed. The working keys differ from the host's, or the answer was "
            "altered on the way",
            "主机应答的 MAC 校验失败：已应答 A0，金融类交易将被冲正。工作密钥与主机不一致，"
            "或应答在传输中被篡改",
        ),
        action=_SIGN_IN,
    ),
    "host.signin-failed": Entry(
        meaning=Text(
            "the payment app's sign-in, which the agent makes for it, failed: the answer's field "
            "63 says why (the host refused it, did not answer, or the module refused the keys)",
            "本程序代收款应用进行的签到失败：应答 63 域说明原因"
            "（主机拒绝、主机无应答或模块拒绝密钥）",
        ),
        action=Text(
            "`agent selftest --only network,keys`", "运行 `agent selftest --only network,keys`"
        ),
    ),
    # ---------------------------------------------------------------- storage
    "storage.ok": Entry(
        summary=Text(
            "journal writable, {free} MiB free{waiting}", "交易日志可写，剩余 {free} MiB{waiting}"
        )
    ),
    "storage.ok:read-only": Entry(
        summary=Text(
            "journal readable (not written: no service runs), {free} MiB free{waiting}",
            "交易日志可读（未写入：服务未运行），剩余 {free} MiB{waiting}",
        )
    ),
    "storage:reversals-waiting": Entry(
        summary=Text("; {count} reversal(s) waiting to be sent", "；{count} 笔冲正待发送")
    ),
    "storage.journal-absent": Entry(
        summary=Text(
            "no journal yet: the service creates it when it first starts",
            "尚无交易日志：服务首次启动时创建",
        ),
        remedy=Text(
            "start the service: systemctl start pos-agent", "启动服务：systemctl start pos-agent"
        ),
        meaning=Text(
            "there is no journal yet: the service creates it when it first starts",
            "尚无交易日志，服务首次启动时创建",
        ),
        action=Text("`systemctl start pos-agent`", "启动服务：`systemctl start pos-agent`"),
    ),
    "storage.journal-unusable": Entry(
        summary=Text("the journal cannot be opened: {error}", "交易日志无法打开：{error}"),
        remedy=_FREE_UP,
        meaning=Text(
            "the journal cannot be opened (the detail says why: permissions, a full disk, a lock)",
            "交易日志无法打开（详细信息中说明原因：权限、磁盘已满、被锁定等）",
        ),
        action=Text(
            "free space on its disk; check the detail. A user who is neither root nor a member "
            "of `pos-agent-tech` runs the command with `sudo`",
            "清理日志所在磁盘的空间并查看详细信息。既非 root 也非 `pos-agent-tech` "
            "组成员的用户请用 `sudo` 运行",
        ),
    ),
    "storage.journal-unwritable": Entry(
        summary=Text("the journal cannot be written: {error}", "交易日志无法写入"),
        remedy=_FREE_UP,
        meaning=Text(
            "the journal cannot be written. Without it no payment can be recorded",
            "交易日志无法写入，交易无法记录",
        ),
        action=Text(
            "free space on the disk that holds `/var/lib/pos-agent`; check the file system",
            "清理 `/var/lib/pos-agent` 所在磁盘的空间，并检查文件系统",
        ),
    ),
    "storage.disk-full": Entry(
        summary=Text("disk almost full: {free} MiB free", "磁盘将满：剩余 {free} MiB"),
        remedy=_FREE_UP,
        meaning=Text(
            "less than 5 MiB free on the journal's disk", "日志所在磁盘剩余空间不足 5 MiB"
        ),
        action=Text("free space on that disk", "清理该磁盘的空间"),
    ),
    "storage.disk-low": Entry(
        summary=Text("disk space low: {free} MiB free", "磁盘空间不足：剩余 {free} MiB"),
        remedy=_FREE_UP,
        meaning=Text(
            "less than 50 MiB free on the journal's disk", "日志所在磁盘剩余空间不足 50 MiB"
        ),
        action=Text("free space on that disk before it fills", "在磁盘写满前清理空间"),
    ),
    "storage.journal-over-cap": Entry(
        summary=Text(
            "journal {size} MiB, over its cap of {cap} MiB",
            "交易日志 {size} MiB，超出上限 {cap} MiB",
        ),
        remedy=Text(
            "settle the batch (what retention keeps is the open batch, pending rows and queued "
            "reversals)",
            "请结算当前批次（保留的是未结批次、未决交易和排队的冲正）",
        ),
        meaning=Text(
            "the journal is larger than `journal.max_mb`: retention deletes settled rows only, "
            "and what it may not delete (the current batch, pending rows, queued reversals) "
            "fills it",
            "交易日志超过 `journal.max_mb`：清理只删除已结算的记录，"
            "不可删除的内容（当前批次、未决交易、排队的冲正）已占满上限",
        ),
        action=Text(
            "settle the batch; if it persists, raise `journal.max_mb` where the disk has room",
            "请结算当前批次；如仍出现，在磁盘空间允许时调高 `journal.max_mb`",
        ),
    ),
    "storage.reversals-stuck": Entry(
        summary=Text(
            "{count} reversal(s) unconfirmed after {tries} tries (STAN {stans})",
            "{count} 笔冲正经 {tries} 次尝试仍未确认（流水号 {stans}）",
        ),
        remedy=Text(
            "check the network; the agent keeps sending them", "检查网络；本程序会继续发送冲正"
        ),
        meaning=Text(
            "reversals (0400) are still unconfirmed after `reversal.attempts` tries (3); their "
            "STANs are shown. Sales go on; the agent keeps sending them in the background until "
            "the host confirms",
            "冲正（0400）经 `reversal.attempts` 次（3 次）尝试仍未确认，显示其流水号。"
            "交易不受影响，本程序会在后台继续发送直到主机确认",
        ),
        action=Text(
            "check the network. If they stay stuck, settle them with the acquirer",
            "检查网络；如长期未确认，请与收单机构核对处理",
        ),
    ),
    "storage.journal-damaged": Entry(
        summary=_SET_ASIDE,
        remedy=_SETTLE,
        meaning=Text(
            "the journal was found damaged and moved aside as "
            "`journal.sqlite3.damaged-<time>`; the agent runs on a fresh one. The damaged file "
            "may hold reversals that were never confirmed",
            "交易日志已损坏，被移至 `journal.sqlite3.damaged-<时间>`，本程序已使用新日志运行。"
            "损坏的日志中可能有未确认的冲正",
        ),
        action=Text(
            "settle its reversals with the acquirer, then move the file away: the warning stays "
            "while it is beside the journal",
            "与收单机构核对损坏日志中的冲正后，将该文件移走；该文件在日志目录中时此警告会一直存在",
        ),
    ),
    "storage.state-damaged": Entry(
        summary=_SET_ASIDE,
        remedy=_SETTLE,
        meaning=Text(
            "`provisioning.json` or `parameters.json` was damaged and moved aside "
            "(`<name>.damaged-<time>`); the agent runs on fresh files",
            "`provisioning.json` 或 `parameters.json` 已损坏并被移开（`<文件名>.damaged-<时间>`），"
            "本程序已使用新文件运行",
        ),
        action=Text(
            "`agent provision` (for provisioning.json); the next download the host asks for "
            "rewrites parameters.json. Then move the damaged copy away",
            "运行 `agent provision`（针对 provisioning.json）；主机下次要求下载时会重写 "
            "parameters.json。然后将损坏的副本移走",
        ),
    ),
    # ---------------------------------------------------------------- session
    "session.ok": Entry(
        summary=Text(
            "signed in at {signed}, batch {batch}; downloads: {downloads}",
            "{signed} 已签到，批次号 {batch}；已下载：{downloads}",
        )
    ),
    "session.no-journal": Entry(
        summary=Text("no journal to read the session from", "无交易日志，无法查看会话"),
        meaning=Text(
            "there is no journal to read the session from (see the storage check)",
            "无交易日志，无法查看会话（见存储检查项）",
        ),
        action=Text("see the storage check", "查看存储检查项"),
    ),
    "session.parameters-unreadable": Entry(
        summary=Text("downloaded parameters unreadable: {error}", "已下载参数无法读取"),
        remedy=Text(
            "the next download the host asks for replaces the file",
            "主机下次要求下载时会重写该文件",
        ),
        meaning=Text(
            "`parameters.json`, what the host's downloads brought, cannot be read",
            "已下载参数文件 `parameters.json` 无法读取",
        ),
        action=Text(
            "nothing urgent: the next download the host asks for replaces the file",
            "无需立即处理，主机下次要求下载时会重写该文件",
        ),
    ),
    "session.never-signed-in": Entry(
        summary=Text("never signed in", "从未签到"),
        remedy=_SIGN_IN_NOW,
        meaning=Text("the journal has no sign-in", "从未签到"),
        action=_AGENT_SIGNIN,
    ),
    "session.signin-stale": Entry(
        summary=Text("last sign-in {hours} h ago", "上次签到在 {hours} 小时前"),
        remedy=_SIGN_IN_NOW,
        meaning=Text(
            "the last sign-in is more than 24 hours old (CUP terminals sign in every business day)",
            "上次签到已超过 24 小时（银联终端每个营业日签到）",
        ),
        action=_AGENT_SIGNIN,
    ),
    "session.downloads-absent": Entry(
        summary=Text("nothing downloaded yet: {sections}", "尚未下载：{sections}"),
        remedy=Text(
            "they come when the host asks for them or the payment app downloads them",
            "主机要求或收款应用下载时获取",
        ),
        meaning=Text(
            "the terminal parameters or the CA public keys have never been downloaded through the "
            "agent: the payment app's EMV kernel has none of the host's",
            "终端参数或 CA 公钥从未经本程序下载：收款应用的 EMV 内核没有主机下发的数据",
        ),
        action=Text(
            "ask the acquirer to request the downloads at the next sign-in (`agent signin`), "
            "or run them from the payment app",
            "请收单机构在下次签到（`agent signin`）时要求下载，或由收款应用发起下载",
        ),
    ),
    "session.ca-key-expired": Entry(
        summary=Text("CA public key(s) past their expiry: {keys}", "CA 公钥已过期：{keys}"),
        remedy=Text("ask the acquirer to send current CA keys", "请收单机构下发新的 CA 公钥"),
        meaning=Text(
            "CA public keys the host sent are past their expiry date (shown as RID/index); IC "
            "cards of those keys may fail",
            "主机下发的 CA 公钥已过期（显示 RID/索引），使用这些公钥的 IC 卡交易可能失败",
        ),
    ),
    "session.parameters-stale": Entry(
        summary=Text("downloads older than 30 days: {sections}", "下载内容超过 30 天：{sections}"),
        remedy=Text(
            "they are renewed when the host asks; the acquirer can ask now",
            "主机要求时会重新下载；可请收单机构发起",
        ),
        meaning=Text("downloaded parameters are older than 30 days", "下载的参数已超过 30 天"),
    ),
    # ---------------------------------------------------------------- recovery's causes
    "host.<code>": Entry(
        meaning=Text(
            "the host answered `<code>` (for example `host.97`) and the agent is repairing right "
            "now; `host.refused` when the answer carried no code",
            "主机应答 `<code>`（例如 `host.97`），本程序正在修复；"
            "应答中无应答码时为 `host.refused`",
        ),
        action=Text(
            "wait a few seconds; `agent status` again", "稍等几秒后再次运行 `agent status`"
        ),
    ),
    "host.not-signed-in": Entry(
        meaning=Text(
            "no sign-in has succeeded since the service started: the host is unreachable or "
            "refuses the sign-in (the fleet shows the terminal as recovering)",
            "服务启动后尚未签到成功：主机不可达或拒绝签到（车队视图中显示为恢复中）",
        ),
        action=Text(
            "`agent selftest`: the network and keys checks say why",
            "运行 `agent selftest`，网络和密钥检查项会说明原因",
        ),
    ),
    "host.<code>-after-signin": Entry(
        summary=Text(
            "the host answers {code}, {meaning}, after sign-in and re-provisioning",
            "重新签到并下载参数后主机仍应答 {code}（{meaning}）",
        ),
        remedy=_REGISTER,
        meaning=Text(
            "the host still answers `<code>` (for example `host.97-after-signin`) after a "
            "sign-in and a re-provisioning: the acquirer does not know this terminal, or has "
            "cancelled it",
            "重新签到并重新下载参数后主机仍应答 `<code>`（例如 `host.97-after-signin`）："
            "收单机构不认识或已注销该终端",
        ),
        action=Text(
            "call the acquirer to register (or reactivate) the terminal with the TID and MID "
            "that `agent status` shows. The agent signs in again by itself with back-off and "
            "resumes at once when the acquirer has done it",
            "联系收单机构，按 `agent status` 显示的终端号和商户号登记（或重新启用）终端。"
            "本程序会在后台定期重试签到，收单机构处理后立即恢复收款",
        ),
    ),
    "keys.tmk-mismatch": Entry(
        summary=Text(
            "the card module refuses the working keys the host approved (KCV mismatch): its "
            "master key is not the one the host has for this terminal",
            "加密模块拒绝主机签到下发的工作密钥（校验值不符）：模块主密钥与主机登记的不一致",
        ),
        remedy=Text(
            "have the master key loaded again (or set keys.tmk_download where the acquirer "
            "offers a remote download): call support",
            "需重新灌装主密钥（收单机构支持远程下载时可设置 keys.tmk_download）：请联系客服",
        ),
        meaning=Text(
            "the host approved the sign-in but the card module refused its working keys (KCV "
            "mismatch): the module's master key is not the one the host has for this terminal",
            "主机批准了签到，但加密模块拒绝其下发的工作密钥（校验值不符）：模块主密钥与主机登记的不一致",
        ),
        action=Text(
            "have the master key loaded again, or set `keys.tmk_download` where the acquirer "
            "offers a remote download; call support",
            "需重新灌装主密钥（收单机构支持远程下载时可设置 `keys.tmk_download`），请联系客服",
        ),
    ),
    "host.incident": Entry(
        summary=Text(
            "the acquirer's host has a fault that many terminals see at once (a host-side "
            "incident)",
            "收单机构主机故障，众多终端同时受影响（主机侧故障）",
        ),
        remedy=Text(
            "nothing on this terminal needs doing: payments resume when the acquirer has fixed it",
            "本终端无需任何处理：收单机构修复后即可恢复收款",
        ),
        meaning=Text(
            "the fleet announced a host-side incident for this terminal's acquirer: many "
            "terminals are refused at once, the fault is the acquirer's",
            "车队系统已通告该收单机构的主机侧故障：众多终端同时被拒绝，故障在收单机构",
        ),
        action=Text(
            "nothing on the terminal; payments resume when the acquirer has fixed it",
            "终端无需任何处理，收单机构修复后即可恢复收款",
        ),
    ),
    # the merchant's screen and the vendor's hooks while the terminal is unregistered
    # ---------------------------------------------------------------- agent journal
    "journal:no-answer": Entry(summary=Text("no answer", "无应答")),
    "journal:signed-in": Entry(
        summary=Text(
            "signed in as TID {tid} (scheme {scheme}), {kcvs}",
            "以终端号 {tid} 签到（方案 {scheme}），{kcvs}",
        )
    ),
    "journal:refused": Entry(summary=Text("host refused: {code}", "主机拒绝：{code}")),
    "journal:self-check": Entry(
        summary=Text("self-check in {ms} ms: {results}", "自检用时 {ms} 毫秒：{results}")
    ),
    "journal:plan": Entry(summary=Text("plan: {remedies}", "修复计划：{remedies}")),
    "journal:remedy-done": Entry(
        summary=Text("remedy {remedy} done: {detail}", "修复步骤 {remedy} 完成：{detail}")
    ),
    "journal:remedy-failed": Entry(
        summary=Text("remedy {remedy} failed: {detail}", "修复步骤 {remedy} 失败：{detail}")
    ),
    "journal:retried": Entry(
        summary=Text("retried after {after}: {code}", "{after} 之后重试：{code}")
    ),
    "journal:recovered": Entry(
        summary=Text(
            "recovered: {code}, {seconds} s after the refusal",
            "已恢复：{code}，被拒后 {seconds} 秒",
        )
    ),
    "journal:unregistered": Entry(summary=Text("UNREGISTERED: {message}", "未登记：{message}")),
    "journal:request-refused": Entry(
        summary=Text(
            "{cls} refused with {code}, the terminal stays registered ({finding}): {message}",
            "{cls} 被拒，应答 {code}，终端仍已登记（{finding}）：{message}",
        )
    ),
    "journal:request-refused-again": Entry(
        summary=Text(
            "{cls} refused with {code}, the terminal stays registered ({finding}, again: no "
            "sign-in): {message}",
            "{cls} 被拒，应答 {code}，终端仍已登记（{finding}，同类再次被拒：未重新签到）："
            "{message}",
        )
    ),
    "journal:tmk-download": Entry(
        summary=Text(
            "master-key download ({form}): {outcome}{kcv}: {detail}",
            "主密钥远程下载（{form}）：{outcome}{kcv}：{detail}",
        )
    ),
    "journal:registered-again": Entry(summary=Text("registered again: {why}", "已重新登记：{why}")),
    "journal:reversal-queued": Entry(
        summary=Text("reversal queued (reason {reason})", "冲正已排队（原因 {reason}）")
    ),
    "journal:reversal-confirmed": Entry(
        summary=Text("reversal confirmed by the host ({code})", "主机已确认冲正（{code}）")
    ),
    "journal:local-answer": Entry(
        summary=Text(
            "answered {mti} locally with {code}{finding}: {reason}",
            "本地应答 {mti}，应答码 {code}{finding}：{reason}",
        )
    ),
    "journal:transaction": Entry(
        summary=Text(
            "{mti} STAN {stan}{money}{card}: {state}{answer}{detail}",
            "{mti} 流水号 {stan}{money}{card}：{state}{answer}{detail}",
        )
    ),
    # ---------------------------------------------------------------- agent status
    "status:state": Entry(summary=Text("state", "状态")),
    "status:terminal": Entry(summary=Text("terminal", "终端")),
    "status:host": Entry(summary=Text("host", "主机")),
    "status:signed-in": Entry(summary=Text("signed in", "签到")),
    "status:reversals": Entry(summary=Text("reversals", "冲正")),
    "status:last-97": Entry(summary=Text("last 97", "最近 97")),
    "status:refused": Entry(summary=Text("refused", "被拒请求")),
    "status:message": Entry(summary=Text("message", "提示")),
    "status:cause": Entry(summary=Text("cause", "原因")),
    "status:incident": Entry(summary=Text("incident", "主机故障")),
    "status:journal": Entry(summary=Text("journal", "交易日志")),
    "status:connected": Entry(summary=Text("connected", "已连接")),
    "status:not-connected": Entry(summary=Text("not connected", "未连接")),
    "status:never": Entry(summary=Text("never", "从未签到")),
    "status:signed": Entry(
        summary=Text("{at}, scheme {scheme}, KCVs {kcvs}", "{at}，方案 {scheme}，校验值 {kcvs}")
    ),
    "status:reversals-queued": Entry(
        summary=Text(
            "{queued} queued{stuck}, {recheck} closed by 12/25 waiting for their recheck",
            "待发 {queued} 笔{stuck}，{recheck} 笔因 12/25 结束、等待复核",
        )
    ),
    "status:reversals-stuck": Entry(
        summary=Text(
            " ({stuck} stuck after reversal.attempts tries)",
            "（{stuck} 笔经 reversal.attempts 次尝试仍未确认）",
        )
    ),
    "status:last-97-at": Entry(summary=Text("{code} at {at}", "{at} 应答 {code}")),
    "status:refused-counts": Entry(
        summary=Text(
            "{counts} (single requests; the terminal stays registered)",
            "{counts}（单笔请求被拒，终端仍已登记）",
        )
    ),
    "status:incident-open": Entry(
        summary=Text(
            "a host-side incident is open ({source}): the acquirer is at fault",
            "主机侧故障处理中（{source}）：问题在收单机构",
        )
    ),
    "state:registered": Entry(summary=Text("registered", "已登记")),
    "state:recovering": Entry(summary=Text("recovering", "恢复中")),
    "state:unregistered": Entry(summary=Text("unregistered", "未登记")),
    "state:not-signed-in": Entry(summary=Text("not signed in", "未签到")),
    "state:journal-unusable": Entry(
        summary=Text(
            "journal unusable: every request answered 96", "交易日志不可用：所有请求应答 96"
        )
    ),
    "recovery:unregistered": Entry(
        summary=Text(
            "Payments paused on terminal {tid}, merchant {mid}: {reason}. {action}{support}.",
            "终端 {tid}（商户 {mid}）暂停收款：{reason}。{action}{support}。",
        )
    ),
    "recovery:support-phone": Entry(summary=Text(" (support: {phone})", "（客服电话 {phone}）")),
    "recovery:register-terminal": Entry(summary=_REGISTER),
    # ---------------------------------------------------------------- the fleet's causes
    "telemetry.connection-lost": Entry(
        meaning=Text(
            "the fleet lost the terminal's MQTT connection without a goodbye (its will): the "
            "terminal is off, has no network, or the agent died",
            "车队系统与终端的 MQTT 连接异常断开（遗嘱消息）：终端关机、断网或程序异常退出",
        ),
        action=Text(
            "check the terminal's power and network; `systemctl status pos-agent`",
            "检查终端电源和网络；运行 `systemctl status pos-agent`",
        ),
    ),
    "service.stopped": Entry(
        meaning=Text(
            "the service was stopped cleanly (`systemctl stop`, a shutdown, an update)",
            "服务已正常停止（`systemctl stop`、关机或升级）",
        ),
        action=Text(
            "`systemctl start pos-agent` if it should run",
            "如需运行，执行 `systemctl start pos-agent`",
        ),
    ),
}

# What a pattern's wildcards stand for: a check's id; a response code, or "refused" for an
# answer without one.
_WILDCARDS = {"<check>": "|".join(CHECK_NAMES), "<code>": "[0-9A-Z]{2}|refused"}


def _compiled(pattern: str) -> re.Pattern[str]:
    regex = re.escape(pattern)
    for wildcard, alternatives in _WILDCARDS.items():
        regex = regex.replace(re.escape(wildcard), f"(?:{alternatives})")
    return re.compile(regex)


_PATTERNS = {key: _compiled(key) for key in CATALOGUE if "<" in key}


def _candidates(key: str) -> Iterator[Entry]:
    """The entries that may word ``key``, the most particular first: the key itself, the code
    of a ``code:situation``, the patterns the code matches."""
    code = key.partition(":")[0]
    names = dict.fromkeys([key, code, *(p for p, r in _PATTERNS.items() if r.fullmatch(code))])
    found = [CATALOGUE[name] for name in names if name in CATALOGUE]
    if not found:
        raise CatalogueError(f"the message catalogue has no {key!r}")
    yield from found


def _part(key: str, part: Part) -> Text | None:
    return next((t for e in _candidates(key) if (t := getattr(e, part)) is not None), None)


# ``{name}``, as str.format reads it (the templates use no format spec and no doubled brace);
# not string.Formatter: oe-core packs the string module apart (python3-stringold)
PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")


def placeholders(template: str) -> set[str]:
    """The names a template takes: ``{slot}`` in ``"no master key (TMK) in slot {slot}"``."""
    return set(PLACEHOLDER.findall(template))


def _fill(key: str, template: Text, values: Mapping[str, Value]) -> Text:
    missing = (placeholders(template.en) | placeholders(template.zh)) - values.keys()
    if missing:
        raise CatalogueError(f"{key}: no value for {', '.join(sorted(missing))}")

    def spoken(lang: Literal["en", "zh"]) -> dict[str, object]:
        return {
            name: value if isinstance(value, str | int | float) else getattr(value, lang)
            for name, value in values.items()
        }

    return Text(template.en.format_map(spoken("en")), template.zh.format_map(spoken("zh")))


def _all_taken(key: str, templates: Iterable[Text | None], values: Mapping[str, Value]) -> None:
    """A value no template takes is a call site that says something else than the catalogue."""
    taken = set().union(*(placeholders(t.en) | placeholders(t.zh) for t in templates if t))
    unused = values.keys() - taken
    if unused:
        raise CatalogueError(f"{key}: no template takes {', '.join(sorted(unused))}")


def _summary(key: str) -> Text:
    summary = _part(key, "summary")
    if summary is None:
        raise CatalogueError(f"the message catalogue says nothing of {key!r}, it only explains it")
    return summary


def said(key: str, **values: Value) -> tuple[Text, Text | None]:
    """What is said of ``key`` (its summary) and what to do (its remedy, where it has one), both
    filled with ``values``."""
    summary, remedy_ = _summary(key), _part(key, "remedy")
    _all_taken(key, (summary, remedy_), values)
    return _fill(key, summary, values), remedy_ and _fill(key, remedy_, values)


def message(key: str, **values: Value) -> Text:
    """What is said of ``key``, filled with ``values``."""
    summary = _summary(key)
    _all_taken(key, (summary,), values)
    return _fill(key, summary, values)


def remedy(key: str, **values: Value) -> Text | None:
    """What to do about ``key``, filled with ``values``; None when there is nothing to do."""
    template = _part(key, "remedy")
    _all_taken(key, (template,), values)
    return template and _fill(key, template, values)


def explain(code: str) -> tuple[Text, Text]:
    """What ``code`` means and what to do about it, whatever the values (``agent explain``)."""
    meaning, action = _part(code, "meaning"), _part(code, "action") or _part(code, "remedy")
    if meaning is None or action is None:
        raise CatalogueError(f"the message catalogue does not explain {code!r}")
    return meaning, action


def explained() -> list[str]:
    """The codes and patterns of codes :func:`explain` knows, sorted."""
    return sorted(key for key, entry in CATALOGUE.items() if entry.meaning is not None)


def listing(items: Iterable[str]) -> Text:
    """Items as each language lists them: ``PIK, MAK``; ``PIK、MAK``."""
    shown = list(items)
    return Text(", ".join(shown), "、".join(shown))


def sentence(text: Text) -> Text:
    """``text`` at the start of an English sentence (Chinese has no capitals)."""
    return dataclasses.replace(text, en=text.en[:1].upper() + text.en[1:])
