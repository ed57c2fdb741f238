"""The system's time-sync state: systemd-timesyncd's flag file, chrony's tracking report, the
kernel's adjtimex. timesyncd and the kernel are real here; chronyd cannot run in this sandbox,
so a stand-in `chronyc` prints what chrony 4 prints (the CSV of `chronyc -c tracking`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.config import build
from agent.selfcheck import clock, timesync
from agent.selfcheck.base import Context, Status

SYNCED = (
    "A9FEA9FE,169.254.169.254,3,1764600000.1,-0.000012,0.0000,0.0001,-9.1,0,0.02,0.0003,"
    "0.0002,64.2,Normal"
)
UNSYNCED = "00000000,,0,0.0,0.000000,0,0,0,0,0,1.0,1.0,0,Not synchronised"


@pytest.fixture
def no_timesyncd(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "timesync"
    monkeypatch.setattr(timesync, "TIMESYNCD", folder)
    return folder


def chronyc(tmp_path: Path, output: str, status: int = 0) -> str:
    program = tmp_path / "chronyc"
    program.write_text(f"#!/bin/sh\necho '{output}'\nexit {status}\n")
    program.chmod(0o755)
    return str(program)


def test_timesyncd_says_synchronised_once_its_flag_is_there(no_timesyncd) -> None:
    no_timesyncd.mkdir()
    assert timesync.system_sync_state("no-chronyc") == timesync.SyncState(False, "timesyncd")
    (no_timesyncd / "synchronized").touch()
    assert timesync.system_sync_state("no-chronyc") == timesync.SyncState(True, "timesyncd")


def test_chrony_tracking_is_read(tmp_path, no_timesyncd) -> None:
    state = timesync.system_sync_state(chronyc(tmp_path, SYNCED))
    assert (state.synchronised, state.source, state.error_seconds) == (True, "chrony", 0.000012)
    state = timesync.system_sync_state(chronyc(tmp_path, UNSYNCED))
    assert (state.synchronised, state.source) == (False, "chrony")


def test_without_either_the_kernel_tells(tmp_path, no_timesyncd) -> None:
    """A chronyc that cannot reach chronyd (exit 1) is no answer: adjtimex(2) is, here."""
    state = timesync.system_sync_state(chronyc(tmp_path, "506 Cannot talk to daemon", 1))
    assert state is not None and state.source == "kernel"
    assert state.error_seconds is not None and state.error_seconds >= 0


def _clock_check(tmp_path, offset: float = 0.0):
    config = build({"terminal": {"tid": "10000001", "mid": "898100012340001"}}, "test", env={})
    context = Context(config=config, journal=None, module=None, host_clock=lambda: None,
                      now=lambda: time.time() + offset)  # fmt: skip
    return asyncio.run(clock.check(context))


def test_the_clock_check_takes_a_synchronised_system_as_its_reference(no_timesyncd, tmp_path):
    no_timesyncd.mkdir()
    (no_timesyncd / "synchronized").touch()
    check = _clock_check(tmp_path)
    assert check.status is Status.OK
    assert check.data["source"] == "time sync (timesyncd)"
    assert "时间同步服务（timesyncd）" in check.summary.zh
    off = _clock_check(tmp_path, offset=-400)
    assert (off.status, off.finding) == (Status.FAIL, "clock-off")


def test_an_unsynchronised_system_is_no_reference(no_timesyncd, tmp_path, monkeypatch):
    no_timesyncd.mkdir()  # timesyncd runs, has not synced yet
    check = _clock_check(tmp_path)
    assert check.status is Status.SKIP
    assert "system clock not synchronised (timesyncd)" in check.detail
