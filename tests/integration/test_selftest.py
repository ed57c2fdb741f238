"""The self-check against real failures: the host simulator over TCP, the module simulator on a
pty, the TMS simulator over HTTP, real journal files. Time is injected where the clock is the
fault."""

import asyncio
import time

import pytest

from agent.selfcheck import run_checks
from agent.selfcheck.base import Context, Status
from tests.integration.gateway_rig import TID, app_purchase, exchange, gateway_rig


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def context_of(rig, **overrides) -> Context:
    agent = rig.agent
    fields = {
        "config": rig.config,
        "journal": agent.journal,
        "module": agent.module,
        "host_clock": agent.host_clock.sample,
    }
    return Context(**{**fields, **overrides})


def statuses(report) -> dict[str, str]:
    return {c.id: c.status.value for c in report.checks}


def test_healthy_terminal_is_all_ok(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.put_tms()
            for requirement in (1, 4):  # the host asks for its parameters and CA keys
                rig.host.terminals[TID].asks = requirement
                assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
                await rig.agent.host_requests.idle()
            report = await run_checks(context_of(rig))
            assert statuses(report) == dict.fromkeys(
                (
                    "provisioning",
                    "clock",
                    "network",
                    "keys",
                    "module",
                    "registration",
                    "storage",
                    "session",
                ),
                "ok",
            )
            assert report.ok
            assert "TMS" in report.get("provisioning").detail

    run(scenario())


def test_nothing_listening_at_the_host_fails_network_within_the_deadline(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, primary_down=True, sign_in=False) as rig:
            context = context_of(rig, config=_without_backup(rig.config))
            started = time.monotonic()
            report = await run_checks(context, ["network"])
            assert time.monotonic() - started < rig.config.selftest.deadline
            network = report.get("network")
            assert network.status is Status.FAIL and network.finding == "host-unreachable"
            assert "Connect call failed" in network.summary.en or "refused" in network.summary.en
            assert not report.ok

    run(scenario())


def test_host_that_accepts_and_never_answers_fails_network(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.5) as rig:
            rig.server.faults.add("no-answer")
            report = await run_checks(context_of(rig), ["network"])
            network = report.get("network")
            assert network.status is Status.FAIL
            assert "echo test unanswered" in network.summary.en

    run(scenario())


def test_primary_refusing_while_backup_answers_is_a_failover_finding(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, primary_down=True, sign_in=False) as rig:
            network = (await run_checks(context_of(rig), ["network"])).get("network")
            assert (network.status, network.finding) == (Status.WARN, "primary-down")

    run(scenario())


def test_wrong_tid_in_config_differs_from_the_tms(tmp_path) -> None:
    async def scenario():
        wrong_tid = {"terminal": {"tid": "10000009"}}
        async with gateway_rig(tmp_path, sections=wrong_tid, sign_in=False) as rig:
            rig.put_tms(tid="10000001")
            check = (await run_checks(context_of(rig), ["provisioning"])).get("provisioning")
            assert (check.status, check.finding) == (Status.FAIL, "differs-from-tms")
            assert "TID '10000009' here, '10000001' at the TMS" in check.summary.en
            assert check.data["tms"]["tid"] == "10000001"

    run(scenario())


def test_unprovisioned_terminal_says_how_to_provision(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(
            tmp_path, sections={"terminal": {"tid": "", "mid": ""}}, sign_in=False
        ) as rig:
            check = (await run_checks(context_of(rig), ["provisioning"])).get("provisioning")
            assert (check.status, check.finding) == (Status.FAIL, "unprovisioned")
            assert "agent provision" in check.remedy.en and "agent provision" in check.remedy.zh

    run(scenario())


def test_module_without_working_keys_fails_keys(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            check = (await run_checks(context_of(rig), ["keys"])).get("keys")
            assert (check.status, check.finding) == (Status.FAIL, "keys-absent")
            assert "agent signin" in check.remedy.en

    run(scenario())


def test_keys_replaced_behind_the_agents_back_are_stale(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            await _load_other_keys(rig)
            check = (await run_checks(context_of(rig), ["keys"])).get("keys")
            assert (check.status, check.finding) == (Status.FAIL, "kcv-mismatch")

    run(scenario())


@pytest.mark.parametrize(("offset", "status"), [(30, "ok"), (120, "warn"), (-400, "fail")])
def test_clock_offset(tmp_path, offset: float, status: str) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            context = context_of(rig, now=lambda: time.time() + offset)
            check = (await run_checks(context, ["clock"])).get("clock")
            assert check.status.value == status
            if status != "ok":
                assert check.finding == "clock-off"
                assert abs(check.data["offset_seconds"] - offset) < 3
                assert ("behind" if offset < 0 else "ahead") in check.summary.en

    run(scenario())


def test_tampered_module_fails_the_module_check(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.module_port.simulator.tampered = True
            check = (await run_checks(context_of(rig), ["module"])).get("module")
            assert (check.status, check.finding) == (Status.FAIL, "tampered")

    run(scenario())


def test_module_swapped_is_a_warning(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            context = context_of(rig)
            assert (await run_checks(context, ["module"])).get("module").status is Status.OK
            rig.agent.journal.remember("module", "serial OTHER, model X, firmware 0")
            check = (await run_checks(context_of(rig), ["module"])).get("module")
            assert (check.status, check.finding) == (Status.WARN, "module-changed")

    run(scenario())


def test_unusable_journal_fails_storage(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            context = context_of(rig, journal=None, journal_error="file is not a database")
            check = (await run_checks(context, ["storage"])).get("storage")
            assert (check.status, check.finding) == (Status.FAIL, "journal-unusable")
            assert "file is not a database" in check.summary.en

    run(scenario())


def test_a_journal_over_its_cap_is_said(tmp_path) -> None:
    """DESIGN.md section 6: storage checks the "journal size against its cap": a journal larger
    than journal.max_mb (what retention may not delete fills it) is a warning with both sizes."""
    import dataclasses

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            check = (await run_checks(context_of(rig), ["storage"])).get("storage")
            assert (check.status, check.finding) == (Status.OK, "ok")
            tiny = dataclasses.replace(rig.config.journal, max_mb=0.01)
            config = dataclasses.replace(rig.config, journal=tiny)
            check = (await run_checks(context_of(rig, config=config), ["storage"])).get("storage")
            assert (check.status, check.finding) == (Status.WARN, "journal-over-cap")
            assert ", over its cap of 0.01 MiB" in check.summary.en

    run(scenario())


def test_a_damaged_journal_set_aside_is_said_whatever_else_storage_finds(tmp_path) -> None:
    """DESIGN.md section 8: storage reports the damaged journal while its copy is there. Another
    finding may be more urgent (a journal that cannot be opened fails first); then it follows in
    the detail. A stuck reversal comes after it."""
    from agent import paths
    from agent.wire.message import Message

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            journal = rig.agent.journal
            path = paths.journal_path(rig.config)
            path.with_name(path.name + ".damaged-20261207T070000Z").write_bytes(b"not a db")
            sale = Message("0200", {3: "000000", 4: "000000001000", 11: "000042", 41: "1"})
            row = journal.begin(sale, financial=True)
            journal.finish(row, "timed-out", reversal_reason="98")
            for reversal in journal.queued_reversals():
                for _ in range(rig.config.reversal.attempts):
                    journal.reversal_attempted(reversal.id, "no answer")
            check = (await run_checks(context_of(rig), ["storage"])).get("storage")
            assert (check.status, check.finding) == (Status.WARN, "journal-damaged")
            assert "also storage.reversals-stuck: " in check.detail, check.detail
            context = context_of(rig, journal=None, journal_error="file is not a database")
            check = (await run_checks(context, ["storage"])).get("storage")
            assert (check.status, check.finding) == (Status.FAIL, "journal-unusable")
            assert "also storage.journal-damaged: damaged state set aside: " in check.detail

    run(scenario())


def test_a_check_that_hangs_is_cut_at_its_deadline(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"selftest": {"deadline": 0.5}}) as rig:
            rig.module_port.delay = 2.0  # every reply two seconds late
            started = time.monotonic()
            report = await run_checks(context_of(rig), ["module"])
            assert time.monotonic() - started < 1.5
            assert report.get("module").finding == "timeout"

    run(scenario())


def _without_backup(config):
    import dataclasses

    return dataclasses.replace(config, host=dataclasses.replace(config.host, backup=None))


async def _load_other_keys(rig) -> None:
    from agent.sim.module import TEST_TMK
    from agent.wire.working_keys import issue_working_keys

    clear = {"PIK": bytes(range(16)), "MAK": bytes(range(16, 32))}
    field62 = issue_working_keys(TEST_TMK, 2, clear).to_field62()
    await asyncio.to_thread(rig.agent.module.load_working_keys, 0, 2, field62)


def test_a_module_refusing_key_status_is_reported_not_a_crash(tmp_path) -> None:
    """A status other than tamper (here: busy past every retry) is the module not answering."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.module_port.simulator.busy_answers = 100
            check = (await run_checks(context_of(rig), ["keys"])).get("keys")
            assert (check.status, check.finding) == (Status.FAIL, "module-unreachable")
            assert "busy (status 05)" in check.summary.en

    run(scenario())


def test_session_check_findings(tmp_path) -> None:
    """The session check (DESIGN.md section 6): last sign-in, batch, downloads and CA keys."""

    async def session(rig, **overrides):
        return (await run_checks(context_of(rig, **overrides), ["session"])).get("session")

    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            assert (await session(rig)).finding == "never-signed-in"
            await rig.agent.sender.sign_in()
            result = await session(rig)
            assert (result.status, result.finding) == (Status.WARN, "downloads-absent")
            assert "nothing downloaded yet: terminal, ca_keys" in result.summary.en
            later = time.time() + 25 * 3600
            assert (await session(rig, now=lambda: later)).finding == "signin-stale"
            await rig.agent.host_requests.run(4)  # CA keys: the simulator's expire in 2030
            assert "nothing downloaded yet: terminal" in (await session(rig)).summary.en
            await rig.agent.host_requests.run(1)
            result = await session(rig)
            assert (result.status, result.finding) == (Status.OK, "ok")
            assert "downloads: ca_keys, terminal" in result.summary.en
            stored = rig.agent.downloads.store
            old_key = {"rid": "A000000333", "index": "09", "expiry": b"20200101".hex()}
            stored.replace("ca_keys", {"keys": [old_key]})
            expired = await session(rig)
            assert (expired.finding, expired.status) == ("ca-key-expired", Status.WARN)
            assert "A000000333/09" in expired.summary.en
            stored.path.write_text("not json")
            assert (await session(rig)).finding == "parameters-unreadable"

    run(scenario())


def test_an_unplugged_module_is_tried_once_per_run(tmp_path) -> None:
    """The first check that cannot reach the module pays the driver's reopen deadline; the
    others are told at once (a technician's self-check with the module unplugged)."""
    from agent.config import build
    from drivers.serial_module import SerialCardModule

    class Counting(SerialCardModule):
        calls = 0

        def _connected(self, deadline):  # every command starts here
            Counting.calls += 1
            return super()._connected(deadline)

    config = build({"terminal": {"tid": "10000001", "mid": "898100012340001"}}, "test", env={})
    module = Counting(str(tmp_path / "no-module"))
    report = run(run_checks(Context(config=config, journal=None, module=module),
                            ["clock", "keys", "module"]))  # fmt: skip
    assert {c.id: c.status.value for c in report.checks} == {
        "clock": "skip", "keys": "fail", "module": "fail"}  # fmt: skip
    assert Counting.calls == 1
    module.close()
