"""Clock: the terminal's time against the host's (fields 12/13 of a response), the system's
time synchronisation (timesyncd, chrony, the kernel) or else NTP where a server is configured,
and the card module's RTC. Over ``clock.warn_after`` seconds apart warns, over
``clock.fail_after`` fails: hosts refuse terminals whose time is far off."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from agent import messages
from agent.host.clock import HostClockSample
from agent.messages import Text
from agent.selfcheck.base import CheckResult, Context, Status
from agent.selfcheck.timesync import SyncState, system_sync_state
from drivers.module import ModuleError

ID = "clock"


def host_offset(sample: HostClockSample) -> float:
    """Our clock minus the host's, in seconds. The host sends no year: take the one that puts its
    time nearest ours."""
    ours = datetime.fromtimestamp(sample.local)
    month, day = int(sample.host_mmddhhmmss[0:2]), int(sample.host_mmddhhmmss[2:4])
    hms = sample.host_mmddhhmmss[4:10]
    candidates = []
    for year in (ours.year - 1, ours.year, ours.year + 1):
        try:
            stamp = f"{year:04d}{month:02d}{day:02d}{hms}"
            candidates.append(datetime.strptime(stamp, "%Y%m%d%H%M%S"))
        except ValueError:  # 29 February of a common year
            continue
    host = min(candidates, key=lambda moment: abs((ours - moment).total_seconds()))
    return (ours - host).total_seconds()


async def _ntp_offset(server: str, now: float, timeout: float) -> float:
    import ntplib  # only when an NTP server is configured

    def ask() -> float:
        response = ntplib.NTPClient().request(server, version=3, timeout=timeout)
        return response.tx_time + response.delay / 2

    reference = await asyncio.to_thread(ask)
    return now - reference


def _describe(seconds: float) -> str:
    return f"{abs(seconds):.0f} s {'ahead' if seconds > 0 else 'behind'}"


async def check(context: Context) -> CheckResult:
    config = context.config.clock
    offsets: dict[Text, float] = {}  # by the reference, named in both languages
    notes: list[str] = []
    sample = context.host_clock() or await _signin_clock(context)
    if sample is not None:
        offsets[messages.message("clock:host")] = host_offset(sample)
    if context.module is not None:
        try:
            module_time = await context.module_call(context.module.rtc)
        except ModuleError as exc:
            notes.append(f"module RTC not read: {exc}")
        else:
            offsets[messages.message("clock:module-rtc")] = (
                datetime.fromtimestamp(context.now()) - module_time
            ).total_seconds()
    synced: SyncState | None = await asyncio.to_thread(system_sync_state)
    if synced is not None and synced.synchronised:
        # the system keeps its clock on true time: within its own error, it is a reference
        time_sync = messages.message("clock:time-sync", service=synced.source)
        offsets[time_sync] = context.now() - time.time()
        if synced.error_seconds is not None:
            notes.append(f"{synced.source}: synchronised, error under {synced.error_seconds:g} s")
    elif synced is not None:
        notes.append(f"system clock not synchronised ({synced.source})")
    if config.ntp_server and not (synced is not None and synced.synchronised):
        try:
            offsets[messages.message("clock:ntp", server=config.ntp_server)] = await _ntp_offset(
                config.ntp_server, context.now(), min(2.0, context.config.selftest.deadline / 2)
            )
        except Exception as exc:  # ntplib raises socket errors and its own NTPException
            notes.append(f"NTP {config.ntp_server} not reached: {exc}")
    if not offsets:
        return CheckResult.of(ID, Status.SKIP, "; ".join(notes))
    source, worst = max(offsets.items(), key=lambda item: abs(item[1]))
    detail = "; ".join([f"vs {name.en}: {_describe(o)}" for name, o in offsets.items()] + notes)
    reference = datetime.fromtimestamp(context.now()) - timedelta(seconds=worst)
    data = {
        "offset_seconds": round(worst, 1),
        "source": source.en,
        "reference_time": reference.isoformat(timespec="seconds"),
    }
    seconds = f"{abs(worst):.0f}"
    if abs(worst) <= config.warn_after:
        return CheckResult.of(ID, Status.OK, detail, data=data, seconds=seconds, source=source)
    return CheckResult.of(
        ID,
        Status.FAIL if abs(worst) > config.fail_after else Status.WARN,
        detail,
        finding="clock-off",
        data=data,
        seconds=seconds,
        direction=messages.message("clock:ahead" if worst > 0 else "clock:behind"),
        source=source,
    )


async def _signin_clock(context: Context) -> HostClockSample | None:
    """The host time the last sign-in carried, and our clock then."""
    last = await context.last_signin()
    if not last or not last["host_time"]:
        return None
    return HostClockSample(last["at"], last["host_time"])
