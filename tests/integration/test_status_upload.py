"""The status upload (0820/362, DESIGN.md section 16) of a real agent to the host simulator, which
reads it as a CUP host does (a tag it does not know, a value of another length: 30): before and
after a terminal-parameter download, under the built-in table and two real acquirers' tables,
with and without their wire profile."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.sim.host_downloads import PARAMETER_TABLES
from tests.integration.gateway_rig import gateway_rig
from tests.integration.test_simulators import call
from tests.processes import HostProcess

PROFILES = Path(__file__).resolve().parents[2] / "docs/examples/profiles"
DEVICES = (
    b"011021031041051"  # keyboard, PIN pad (the module answers INFO), reader, printer, display
)
FAST_RETRIES = {"session": {"retry_first": 0.01, "retry_max": 0.05, "attempts": 2}}


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def entries(table: str, upto: str | None = None) -> bytes:
    """Tag + value of the host's ``table`` as sent, up to (not including) tag ``upto``."""
    sent = PARAMETER_TABLES[table]
    tags = [tag for tag, _ in sent]
    return b"".join(t.encode() + v for t, v in sent[: tags.index(upto) if upto else None])


def test_before_any_download_only_the_devices_go(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            await rig.agent.host_requests.run(2)
            downloads = rig.host.downloads
            assert [bytes.fromhex(u) for u in downloads.status_uploads] == [DEVICES]
            assert downloads.status_refusals == []
            assert downloads.statuses == [{f"0{n}": b"1" for n in range(1, 6)}]
            assert (
                rig.agent.downloads.store.read()["status_upload"]["sent"] == DEVICES.hex().upper()
            )

    run(scenario())


def test_a_damaged_parameters_file_is_set_aside_and_the_devices_go(tmp_path) -> None:
    """A parameters.json cut off mid-write (DESIGN.md section 8: set aside and reported, never
    a reason to stop): the upload goes as before any download, and the file is kept for a
    person beside the new one."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            store = rig.agent.downloads.store
            store.path.write_text('{"terminal": {"raw": "1102')
            await rig.agent.host_requests.run(2)
            downloads = rig.host.downloads
            assert [bytes.fromhex(u) for u in downloads.status_uploads] == [DEVICES]
            [aside] = store.path.parent.glob(f"{store.path.name}.damaged-*")
            assert aside.read_text() == '{"terminal": {"raw": "1102'
            assert "status_upload" in store.read()

    run(scenario())


def test_after_a_download_its_parameters_follow_exactly(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            await rig.agent.host_requests.run(1)
            await rig.agent.host_requests.run(2)
            downloads = rig.host.downloads
            [upload] = downloads.status_uploads
            assert bytes.fromhex(upload) == DEVICES + entries("cup")  # 51 is last there
            assert downloads.status_refusals == []
            [status] = downloads.statuses
            assert status["25"] == b"1" and status["22"].decode("gb2312").startswith("测试商户")

    run(scenario())


@pytest.mark.parametrize(
    ("table", "with_profile", "upto", "reason"),
    [
        ("huateng", True, None, None),
        ("huateng", False, "24", "tag 24 (offline_upload_mode) is ' ', not digits"),
        ("aiaunionpay", True, None, None),
        ("aiaunionpay", False, "19", "tag 19 (tip_percent) is ' 5', not digits"),
    ],
)
def test_a_real_acquirers_table_with_and_without_its_profile(
    tmp_path, table: str, with_profile: bool, upto: str | None, reason: str | None
) -> None:
    """With its profile, every tag is read and sent back; without, what could not be read is
    kept raw with the reason, and what is sent back still reads right at that host."""

    async def scenario():
        profile = {"wire": {"profile": str(PROFILES / f"{table}.toml")}}
        async with gateway_rig(tmp_path, sections=profile if with_profile else None) as rig:
            rig.host.downloads.set_parameter_table(table)
            await rig.agent.host_requests.run(1)
            terminal = rig.agent.downloads.store.read()["terminal"]
            assert terminal["reason"] == reason
            assert terminal["unparsed"] == (
                entries(table)[len(entries(table, upto)) :].hex().upper() or None
            )
            await rig.agent.host_requests.run(2)
            downloads = rig.host.downloads
            assert [bytes.fromhex(u) for u in downloads.status_uploads] == [
                DEVICES + entries(table, upto)
            ]
            assert downloads.status_refusals == [] and len(downloads.statuses) == 1

    run(scenario())


def test_a_cut_answer_keeps_the_rest_raw_and_the_upload_leaves_it_out(tmp_path) -> None:
    """A 0810/360 one byte short: tag 51 runs past the end. The values before it are kept (the
    chain completes), 51 is kept raw with the reason, and the status upload does not send it."""

    async def scenario():
        async with gateway_rig(tmp_path, sections=FAST_RETRIES) as rig:
            rig.host.downloads.set_fault("short-62")
            rig.host.downloads.fault_codes = {"360"}
            await rig.agent.host_requests.run(1)
            terminal = rig.agent.downloads.store.read()["terminal"]
            assert terminal["reason"] == "tag 51 (tag_51) needs 12 bytes, 11 are left"
            assert bytes.fromhex(terminal["unparsed"]) == b"51" + b"00110011109"
            [event] = [
                e for e in rig.agent.journal.events() if e["kind"] == "parameters-downloaded"
            ]
            assert event["kept_raw"] == terminal["reason"]
            await rig.agent.host_requests.run(2)
            [upload] = rig.host.downloads.status_uploads
            assert bytes.fromhex(upload) == DEVICES + entries("cup", "51")
            assert rig.host.downloads.status_refusals == []

    run(scenario())


def test_the_host_process_takes_the_table_in_its_settings(tmp_path) -> None:
    host = HostProcess(tmp_path)
    try:
        assert call("POST", f"{host.admin}/settings", {"parameter_table": "huateng"})[0] == 200
        assert host.state()["downloads"]["parameter_table"] == "huateng"
        assert call("POST", f"{host.admin}/settings", {"parameter_table": "visa"}) == (
            400,
            {"error": "parameter table must be one of 'cup', 'huateng', 'aiaunionpay'"},
        )
        assert host.state()["downloads"]["parameter_table"] == "huateng"
    finally:
        host.stop()
