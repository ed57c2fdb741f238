"""Session: the last sign-in and its batch, and what the session downloads brought (present,
readable, not stale; no CA key past its expiry)."""

from __future__ import annotations

import time
from datetime import datetime

from agent import paths
from agent.selfcheck.base import CheckResult, Context, Status, Text, signin_scheme
from agent.session.store import ParameterStore

ID = "session"
SIGNIN_STALE = 24 * 3600  # CUP terminals sign in every business day
PARAMETERS_STALE = 30 * 24 * 3600


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.0f}"


async def check(context: Context) -> CheckResult:
    journal = context.journal
    if journal is None:
        return CheckResult(
            ID,
            Status.SKIP,
            Text("no journal to read the session from", "无交易日志，无法查看会话"),
            finding="no-journal",
        )
    now = context.now()
    last = await context.last_signin()
    store = ParameterStore(paths.parameters_path(context.config))
    try:
        downloaded = store.read()
    except (OSError, ValueError) as exc:
        return CheckResult(
            ID,
            Status.WARN,
            Text(f"downloaded parameters unreadable: {exc}", "已下载参数无法读取"),
            f"{store.path}: {exc}",
            Text("the next download the host asks for replaces the file",
                 "主机下次要求下载时会重写该文件"),
            finding="parameters-unreadable",
        )  # fmt: skip
    sections = ", ".join(sorted(downloaded)) or "none"
    detail = f"batch {journal.batch:06d}; downloads: {sections}"
    if last is None:
        return CheckResult(
            ID,
            Status.WARN,
            Text("never signed in", "从未签到"),
            detail,
            Text("sign in: agent signin", "签到：agent signin"),
            finding="never-signed-in",
        )
    scheme, data = signin_scheme(last)
    detail = f"{detail}; {scheme}"
    age = now - last["at"]
    if age > SIGNIN_STALE:
        return CheckResult(
            ID,
            Status.WARN,
            Text(f"last sign-in {_hours(age)} h ago", f"上次签到在 {_hours(age)} 小时前"),
            detail,
            Text("sign in: agent signin", "签到：agent signin"),
            finding="signin-stale",
            data=data,
        )
    today = datetime.fromtimestamp(now).strftime("%Y%m%d")
    expired = [
        f"{key['rid']}/{key['index']}"
        for key in downloaded.get("ca_keys", {}).get("keys", [])
        if _expiry(key.get("expiry")) and _expiry(key.get("expiry")) < today
    ]
    if expired:
        return CheckResult(
            ID,
            Status.WARN,
            Text(
                f"CA public key(s) past their expiry: {', '.join(expired)}",
                f"CA 公钥已过期：{'、'.join(expired)}",
            ),
            detail,
            Text("ask the acquirer to send current CA keys", "请收单机构下发新的 CA 公钥"),
            finding="ca-key-expired",
            data=data,
        )
    stale = [s for s, c in downloaded.items() if now - c.get("at", now) > PARAMETERS_STALE]
    if stale:
        return CheckResult(
            ID,
            Status.WARN,
            Text(f"downloads older than 30 days: {', '.join(stale)}",
                 f"下载内容超过 30 天：{'、'.join(stale)}"),
            detail,
            Text("they are renewed when the host asks; the acquirer can ask now",
                 "主机要求时会重新下载；可请收单机构发起"),
            finding="parameters-stale",
            data=data,
        )  # fmt: skip
    signed = time.strftime("%m-%d %H:%M", time.localtime(last["at"]))
    return CheckResult(
        ID,
        Status.OK,
        Text(f"signed in at {signed}, batch {journal.batch:06d}; downloads: {sections}",
             f"{signed} 已签到，批次号 {journal.batch:06d}；已下载：{sections}"),
        detail,
        data=data,
    )  # fmt: skip


def _expiry(value: object) -> str:
    """DF05 as YYYYMMDD: the hex of 8 ASCII digits, or of 4 BCD bytes (YYYYMMDD)."""
    if not isinstance(value, str):
        return ""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return ""
    text = raw.decode("ascii", "replace") if len(raw) == 8 else raw.hex()
    return text if len(text) == 8 and text.isdigit() else ""
