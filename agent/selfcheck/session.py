"""Session: the last sign-in and its batch, and what the session downloads brought (present,
readable, not stale; no CA key past its expiry)."""

from __future__ import annotations

import time
from datetime import datetime

from agent import messages, paths
from agent.selfcheck.base import CheckResult, Context, Status, signin_scheme
from agent.session.store import ParameterStore, expiry

ID = "session"
SIGNIN_STALE = 24 * 3600  # CUP terminals sign in every business day
PARAMETERS_STALE = 30 * 24 * 3600
# what the payment app's EMV kernel needs of the host's downloads (DESIGN.md section 6)
NEEDED = ("terminal", "ca_keys")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.0f}"


async def check(context: Context) -> CheckResult:
    journal = context.journal
    if journal is None:
        return CheckResult.of(ID, Status.SKIP, finding="no-journal")
    now = context.now()
    last = await context.last_signin()
    store = ParameterStore(paths.parameters_path(context.config))
    try:
        downloaded = store.read()
    except (OSError, ValueError) as exc:
        return CheckResult.of(
            ID, Status.WARN, f"{store.path}: {exc}", finding="parameters-unreadable", error=str(exc)
        )
    sections = ", ".join(sorted(downloaded)) or "none"
    batch = f"{journal.batch:06d}"
    detail = f"batch {batch}; downloads: {sections}"
    if last is None:
        return CheckResult.of(ID, Status.WARN, detail, finding="never-signed-in")
    scheme, data = signin_scheme(last)
    detail = f"{detail}; {scheme}"
    age = now - last["at"]
    if age > SIGNIN_STALE:
        return CheckResult.of(
            ID, Status.WARN, detail, finding="signin-stale", data=data, hours=_hours(age)
        )
    today = datetime.fromtimestamp(now).strftime("%Y%m%d")
    expired = [
        f"{key['rid']}/{key['index']}"
        for section in ("ca_keys", "sm2_ca_keys")
        for key in downloaded.get(section, {}).get("keys", [])
        if expiry(key.get("expiry")) and expiry(key.get("expiry")) < today
    ]
    if expired:
        return CheckResult.of(
            ID,
            Status.WARN,
            detail,
            finding="ca-key-expired",
            data=data,
            keys=messages.listing(expired),
        )
    stale = [s for s, c in downloaded.items() if now - c.get("at", now) > PARAMETERS_STALE]
    if stale:
        return CheckResult.of(
            ID,
            Status.WARN,
            detail,
            finding="parameters-stale",
            data=data,
            sections=messages.listing(stale),
        )
    absent = [s for s in NEEDED if s not in downloaded]  # after what is there is found good
    if absent:
        return CheckResult.of(
            ID,
            Status.WARN,
            detail,
            finding="downloads-absent",
            data=data,
            sections=messages.listing(absent),
        )
    signed = time.strftime("%m-%d %H:%M", time.localtime(last["at"]))
    return CheckResult.of(
        ID, Status.OK, detail, data=data, signed=signed, batch=batch, downloads=sections
    )
