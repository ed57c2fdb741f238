"""The self-check's registration check (DESIGN.md sections 6 and 17) through a real agent: the
module simulator on a pty answers TUSN, the TMS simulator over HTTP holds the terminal's record,
real `registration-check` and `location` hooks, the host simulator refusing a TUSN, the journal
a technician's own ``agent selftest`` reads when no agent runs."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from agent.selfcheck import run_checks
from agent.selfcheck.base import CheckResult, Status
from agent.selfcheck.report import finding_code
from agent.sim.module import TEST_TUSN_KEY
from agent.sim.site import MID, TID
from tests.integration.gateway_rig import app_purchase, exchange, gateway_rig
from tests.processes import AGENT


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def module_tusn(rig) -> str:
    return rig.module_port.simulator.state.tusn


async def registration(rig) -> CheckResult:
    """The registration check as the running agent runs it (its live journal, module, hooks)."""
    report = await run_checks(rig.agent.remedies.check_context(), ["registration"])
    check = report.get("registration")
    assert check is not None
    return check


def assert_found(check: CheckResult, status: Status, code: str) -> None:
    """``check`` found ``code`` with ``status``, said in both languages with what to do."""
    assert (check.status, finding_code(check)) == (status, code), (check.summary, check.detail)
    assert check.summary.en and check.summary.zh
    assert check.remedy is not None and check.remedy.en and check.remedy.zh


def install_hook(tmp_path: Path, event: str, name: str, text: str) -> Path:
    """An executable hook as an image installs it: owned by root (the tests' user), mode 0755,
    in ``hooks.d/<event>/``, directories 0755."""
    folder = tmp_path / "hooks.d" / event
    folder.mkdir(parents=True, exist_ok=True)
    for directory in (folder.parent, folder):
        directory.chmod(0o755)
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def registration_check_hook(tmp_path: Path, script: str) -> Path:
    """A `registration-check` hook that keeps the payload it got in a file (returned), then runs
    ``script`` (shell)."""
    payload = tmp_path / "registration-check.json"
    install_hook(tmp_path, "registration-check", "50-acquirer",
                 f"#!/bin/sh\ncat > {payload}\n{script}\n")  # fmt: skip
    return payload


# ------------------------------------------------------------------------------------- the TUSN


def test_a_healthy_terminal_is_ok_with_the_modules_tusn(tmp_path) -> None:
    """The module answers TUSN, the TMS names the same one, the last purchase carried the A2
    the agent built: ok, with the module's TUSN in the data."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            tusn = module_tusn(rig)
            rig.put_tms(tusn=tusn)
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            check = await registration(rig)
            assert (check.status, finding_code(check)) == (Status.OK, "registration.ok")
            assert check.data["tusn"] == tusn and check.data["mode"] == "module"
            assert tusn in check.summary.en and tusn in check.summary.zh
            assert "A2 on 1 of the last 1 purchases" in check.detail, check.detail

    run(scenario())


def test_a_module_without_a_tusn_key_is_tusn_absent(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.module_port.simulator.state.tusn_key = None
            check = await registration(rig)
            assert_found(check, Status.FAIL, "registration.tusn-absent")
            assert "tusn" not in check.data

    run(scenario())


def test_a_tusn_that_cannot_be_read_is_no_ok(tmp_path) -> None:
    """No module, or one that refuses for another reason than a missing TUSN key (tampered): the
    TUSN the check is about is unknown, so it is skipped with the reason, never ok; a problem
    found elsewhere still comes first."""

    async def scenario():
        async with gateway_rig(tmp_path, sections={"registration": {"tusn": "app"}}) as rig:
            context = rig.agent.remedies.check_context()
            context.module = None
            report = await run_checks(context, ["registration"])
            check = report.get("registration")
            assert check is not None
            assert (check.status, finding_code(check)) == (Status.SKIP, "registration.skip")
            assert check.summary.en == "no card module: TUSN not asked" and check.summary.zh
            rig.module_port.simulator.tampered = True
            check = await registration(rig)
            assert (check.status, finding_code(check)) == (Status.SKIP, "registration.skip")
            assert check.summary.en.startswith("TUSN not read: card module refused TUSN: tamper")
            assert "tusn" not in check.data
            rig.module_port.simulator.tampered = False
            # a purchase without the A2 the app is to send: a warning, which is the result then
            assert (await exchange(rig.socket, app_purchase(1100))).text(39) == "00"
            rig.module_port.simulator.tampered = True
            check = await registration(rig)
            assert (check.status, finding_code(check)) == (Status.WARN, "registration.a2-missing")
            assert "TUSN not asked: card module refused TUSN" in check.detail

    run(scenario())


def test_the_tms_record_keeps_the_tusn(tmp_path) -> None:
    """What the TMS simulator is given for a terminal, its TUSN included, is what it serves
    over HTTP and what the agent reads of it."""
    from agent.provisioning import fetch_from_tms

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.put_tms(tusn="00009902OTHER")
            serial = rig.module_port.simulator.state.serial
            assert rig.site.tms.get(serial)["tusn"] == "00009902OTHER"
            record = await fetch_from_tms(rig.site.tms_url, serial, 2)
            assert record.tusn == "00009902OTHER"

    run(scenario())


def test_a_tms_naming_another_tusn_is_a_difference(tmp_path) -> None:
    """The TMS holds another TUSN (the module was swapped): fail, naming both."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.put_tms(tusn="00009902OTHER")
            check = await registration(rig)
            assert_found(check, Status.FAIL, "registration.tusn-differs-from-tms")
            assert module_tusn(rig) in check.summary.en and "00009902OTHER" in check.summary.en
            assert module_tusn(rig) in check.remedy.en and module_tusn(rig) in check.remedy.zh

    run(scenario())


def test_a_tms_naming_the_same_tusn_is_ok(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.put_tms(tusn=module_tusn(rig))
            assert (await registration(rig)).status is Status.OK

    run(scenario())


# ------------------------------------------------------------------ the acquirer's own check


def test_the_acquirer_has_not_reported_the_tusn(tmp_path) -> None:
    """The `registration-check` hook gets the terminal's TID, MID and the module's TUSN, and
    says the acquirer has not reported it: fail, with the hook's detail."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            said = registration_check_hook(
                tmp_path, """echo '{"reported": false, "detail": "not in the CUP list"}'"""
            )
            check = await registration(rig)
            assert_found(check, Status.FAIL, "registration.tusn-not-reported")
            tusn = module_tusn(rig)
            assert tusn in check.summary.en and "not in the CUP list" in check.summary.en
            assert tusn in check.remedy.en
            assert json.loads(said.read_text()) == {
                "event": "registration-check", "tid": TID, "mid": MID, "tusn": tusn,
            }  # fmt: skip

    run(scenario())


def test_the_acquirer_has_reported_the_tusn(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            said = registration_check_hook(tmp_path, """echo '{"reported": true}'""")
            check = await registration(rig)
            assert check.status is Status.OK, (check.summary, check.detail)
            assert f"the acquirer has TUSN {module_tusn(rig)} reported" in check.detail
            assert json.loads(said.read_text())["tusn"] == module_tusn(rig)

    run(scenario())


def test_a_hook_that_cannot_tell_says_nothing(tmp_path) -> None:
    """The hook exits 75 (the acquirer's portal is down): the check says nothing about it."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            said = registration_check_hook(tmp_path, """echo '{"reported": false}'; exit 75""")
            check = await registration(rig)
            assert check.status is Status.OK, (check.summary, check.detail)
            assert "exit 75" in check.detail
            assert json.loads(said.read_text())["tusn"] == module_tusn(rig)

    run(scenario())


def test_a_hook_another_user_could_change_is_refused_and_journalled(tmp_path) -> None:
    """Section 9: a hook whose file another user could change "is refused and journalled",
    those the self-check asks (the acquirer's check, the location) as the others."""

    async def scenario():
        sections = {"registration": {"location": True}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            for event in ("registration-check", "location"):
                hook = install_hook(tmp_path, event, "50-vendor", "#!/bin/sh\necho '{}'\n")
                hook.chmod(0o775)  # group-writable
            check = await registration(rig)
            assert "refused" in check.detail, check.detail
            refused = [e for e in rig.agent.journal.events() if e["kind"] == "hook-refused"]
            assert {Path(e["hook"]).parent.name for e in refused} == {
                "registration-check", "location"
            }  # fmt: skip

    run(scenario())


# ---------------------------------------------------------------------------------------- A2


def test_a2_switched_off_is_a_warning(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"registration": {"tusn": "off"}}) as rig:
            check = await registration(rig)
            assert_found(check, Status.WARN, "registration.a2-missing")
            assert 'registration.tusn = "off"' in check.summary.en
            assert check.data["mode"] == "off"

    run(scenario())


def test_a_last_purchase_without_a2_is_a_warning(tmp_path) -> None:
    """The app is to send A2 and sent a purchase without field 59 (the host approved it)."""

    async def scenario():
        async with gateway_rig(tmp_path, sections={"registration": {"tusn": "app"}}) as rig:
            assert (await registration(rig)).status is Status.OK  # no purchase yet
            assert (await exchange(rig.socket, app_purchase(1100))).text(39) == "00"
            check = await registration(rig)
            assert_found(check, Status.WARN, "registration.a2-missing")
            assert "last purchase" in check.summary.en
            assert "A2 on 0 of the last 1 purchases" in check.detail

    run(scenario())


# ---------------------------------------------------------------------------------------- A5


def test_a_location_wanted_without_a_hook_is_a_warning(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"registration": {"location": True}}) as rig:
            check = await registration(rig)
            assert_found(check, Status.WARN, "registration.location-unavailable")
            assert "no location hook is installed" in check.summary.en

    run(scenario())


def test_a_location_hook_that_answers_is_ok(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"registration": {"location": True}}) as rig:
            hook = install_hook(
                tmp_path, "location", "50-gps",
                """#!/bin/sh\necho '{"longitude": "121.47", "latitude": "31.23"}'\n""",
            )  # fmt: skip
            check = await registration(rig)
            assert check.status is Status.OK, (check.summary, check.detail)
            assert f"location from {hook}" in check.detail

    run(scenario())


# ------------------------------------------------------------------------- the last refusal


def refused_for_its_tusn(rig) -> str:
    """The host checks A2 and has not reported this terminal's TUSN; returns the TUSN."""
    rig.host.set_tusn_check(True, "97", TEST_TUSN_KEY)
    rig.host.report_tusn(TID, module_tusn(rig), reported=False)
    return module_tusn(rig)


def test_the_last_refusal_for_the_tusn_fails_the_check(tmp_path) -> None:
    """A purchase refused for its TUSN, the terminal still registered: the check fails with the
    refusal's finding, and its data names the TUSN that was refused."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            tusn = refused_for_its_tusn(rig)
            answer = await exchange(rig.socket, app_purchase(1200))
            assert answer.text(39) == "97"
            check = await registration(rig)
            assert_found(check, Status.FAIL, "registration.tusn-refused")
            refusal = check.data["last_refusal"]
            assert refusal["tusn"] == tusn
            assert (refusal["finding"], refusal["code"], refusal["class"]) == (
                "registration.tusn-refused", "97", "purchase",
            )  # fmt: skip
            assert tusn in check.summary.en and tusn in check.summary.zh

    run(scenario())


def test_a_technicians_selftest_reads_the_refusal_from_the_journal(tmp_path) -> None:
    """After the agent stopped, ``agent selftest --json --only registration`` run by hand opens
    the journal the agent left and the module itself: the same refusal, exit 1."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            tusn = refused_for_its_tusn(rig)
            assert (await exchange(rig.socket, app_purchase(1300))).text(39) == "97"
            await rig.agent.close()  # no agent runs from here on: the module is free
            config = technicians_config(tmp_path, rig.site.module_path, rig.site.tms_url)
            process = await asyncio.create_subprocess_exec(
                AGENT, "selftest", "--json", "--lang", "en", "--only", "registration",
                "--config", str(config),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"),
                     "XDG_RUNTIME_DIR": str(tmp_path / "run")},
            )  # fmt: skip
            out, err = await process.communicate()
            return tusn, process.returncode, out.decode(), err.decode()

    tusn, returncode, out, err = run(scenario())
    assert returncode == 1, (out, err)
    [check] = json.loads(out)["checks"]
    assert (check["id"], check["status"], check["finding"]) == (
        "registration", "fail", "registration.tusn-refused",
    )  # fmt: skip
    assert tusn in check["summary"] and check["remedy"]
    assert f"module TUSN {tusn}" in check["detail"]  # it asked the module itself


def technicians_config(tmp_path: Path, module: str, tms: str) -> Path:
    """The agent's configuration as the technician's ``agent selftest`` reads it: the journal
    the agent wrote, the module, no running agent at the control socket."""
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[terminal]
tid = "{TID}"
mid = "{MID}"

[module]
url = "{module}"

[journal]
path = "{tmp_path / "journal.sqlite3"}"

[control]
socket = "{tmp_path / "control.sock"}"

[tms]
url = "{tms}"

[hooks]
directory = "{tmp_path / "hooks.d"}"
""")  # fmt: skip
    return config


def test_a_refusal_of_another_kind_only_informs(tmp_path) -> None:
    """A balance inquiry refused (it carries no A2): the check names it in its detail and stays
    ok, the refusal is not the TUSN's."""
    from tests.integration.test_registration import balance_inquiry

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add("refused-first", count=3, mti="0200")
            assert (await exchange(rig.socket, balance_inquiry())).text(39) == "97"
            check = await registration(rig)
            assert check.status is Status.OK, (check.summary, check.detail)
            assert "was refused with 97" in check.detail
            assert check.data["last_refusal"]["finding"] == "request.refused"

    run(scenario())


def test_a_hanging_acquirers_check_costs_no_finding(tmp_path) -> None:
    """The `registration-check` hook hangs (the acquirer's portal does not answer): the check
    still ends within its deadline with what it found (the TMS names another TUSN) and says
    the hook was cut; the location hook after it still has a say."""

    async def scenario():
        sections = {"selftest": {"deadline": 3}, "registration": {"location": True}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            rig.put_tms(tusn="00009902OTHER")
            registration_check_hook(tmp_path, "exec sleep 30")
            check = await registration(rig)
            assert_found(check, Status.FAIL, "registration.tusn-differs-from-tms")
            assert "registration-check" in check.detail and "killed" in check.detail
            assert "location-unavailable" in check.detail

    run(scenario())
