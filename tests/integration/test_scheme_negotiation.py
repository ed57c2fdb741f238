"""Sign-in scheme negotiation (DESIGN.md section 4): with ``wire.key_scheme = "auto"`` the agent
tries 003 then 004 (DES), moves on when the host answers 40, 12 or 30, and keeps the first scheme
the host approves in the journal, so the next sign-in (after a restart too) starts with it. Against
a posp_server-style host, which lists only 004 and 006 and answers anything else 40, over real
sockets with the module simulator on a real pty."""

import asyncio
import subprocess
import urllib.error

import pytest

from agent.host.link import HostLinkError
from agent.host.signin import SignInError, moves_on, negotiation_order
from agent.selfcheck import run_checks
from agent.selfcheck.base import Context, Status
from tests.integration.gateway_rig import TID, app_purchase, exchange, gateway_rig
from tests.processes import AGENT, HostProcess, ModuleProcess, write_config

POSP = ("004", "006")  # what a posp_server-style host accepts


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def seen(rig) -> list[str]:
    """60.3 of every sign-in the host received, in order."""
    return rig.host.state()["signin_schemes"]


def journalled(rig) -> list[tuple[str, str | None]]:
    """(state, field 39) of each 0800 row of the journal, in order."""
    rows = rig.agent.journal.transactions()
    return [(row["state"], row["response_code"]) for row in rows if row["mti"] == "0800"]


def kept(rig) -> str | None:
    return rig.agent.journal.recall("key_scheme")


def test_the_default_signs_in_with_004_after_one_40_for_003(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            assert rig.config.wire.key_scheme == "auto"
            rig.host.set_accepted_schemes(POSP)
            result = await rig.agent.sender.sign_in()
            assert (result.scheme, result.layout, result.refused) == ("004", 3, {"003": "40"})
            assert seen(rig) == ["003", "004"]
            assert rig.host.state()["sessions"][TID] == {"scheme": "004", "layout": 3}
            assert journalled(rig) == [("declined", "40"), ("completed", "00")]
            assert kept(rig) == "004"
            [signed] = [e for e in rig.agent.journal.events() if e["kind"] == "signed-in"]
            assert (signed["scheme"], signed["refused"]) == ("004", {"003": "40"})
            # the keys of 004 work: the host checks the request's MAC, the agent the answer's
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"

    run(scenario())


def test_a_restart_on_the_same_journal_signs_in_with_the_kept_scheme_at_once(tmp_path) -> None:
    async def first_run():
        async with gateway_rig(tmp_path / "a", sign_in=False, journal_dir=tmp_path) as rig:
            rig.host.set_accepted_schemes(POSP)
            await rig.agent.sender.sign_in()
            assert seen(rig) == ["003", "004"]

    async def after_restart():
        async with gateway_rig(tmp_path / "b", sign_in=False, journal_dir=tmp_path) as rig:
            rig.host.set_accepted_schemes(POSP)
            assert (await rig.agent.sender.sign_in()).scheme == "004"
            assert seen(rig) == ["004"]  # no second 003
            await rig.agent.sender.sign_in()
            assert seen(rig) == ["004", "004"]

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    run(first_run())
    run(after_restart())


def test_agent_signin_processes_keep_the_scheme_between_runs(tmp_path) -> None:
    """``agent sim host --schemes 004,006`` and two ``agent signin`` processes on one journal."""
    host, module = HostProcess(tmp_path, extra=["--schemes", "004,006"]), ModuleProcess(tmp_path)
    try:
        config = write_config(tmp_path, host, module)
        assert host.state()["accepted_schemes"] == ["004", "006"]
        with pytest.raises(urllib.error.HTTPError):  # 400: not a list of 3-digit schemes
            host.post("/settings", {"accepted_schemes": "004"})
        assert host.state()["accepted_schemes"] == ["004", "006"]
        for expected in (["003", "004"], ["003", "004", "004"]):
            result = subprocess.run(
                [AGENT, "signin", "--config", str(config)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert host.state()["signin_schemes"] == expected
        assert host.state()["sessions"]["10000001"] == {"scheme": "004", "layout": 3}
    finally:
        host.stop()
        module.stop()


def test_a_configured_scheme_is_used_alone_and_its_refusal_named(tmp_path) -> None:
    async def scenario():
        sections = {"wire": {"key_scheme": "003"}}
        async with gateway_rig(tmp_path, sign_in=False, sections=sections) as rig:
            rig.host.set_accepted_schemes(POSP)
            with pytest.raises(SignInError) as err:
                await rig.agent.sender.sign_in()
            assert (err.value.response_code, err.value.refused) == ("40", {"003": "40"})
            assert "40 (requested function not supported" in str(err.value)
            assert "to scheme 003" in str(err.value)
            assert seen(rig) == ["003"]
            assert journalled(rig) == [("declined", "40")]
            assert kept(rig) is None

    run(scenario())


def test_a_kept_scheme_refused_later_starts_negotiation_again(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            rig.host.set_accepted_schemes(POSP)
            await rig.agent.sender.sign_in()
            rig.host.set_accepted_schemes(["003"])  # the host changed its list
            result = await rig.agent.sender.sign_in()
            assert (result.scheme, result.refused) == ("003", {"004": "40"})
            assert seen(rig) == ["003", "004", "004", "003"]
            assert kept(rig) == "003"
            await rig.agent.sender.sign_in()
            assert seen(rig)[4:] == ["003"]

    run(scenario())


def test_every_scheme_refused_names_each_and_the_last_code(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            rig.host.set_accepted_schemes(["006"])  # SM4 only: nothing a DES module can use
            with pytest.raises(SignInError) as err:
                await rig.agent.sender.sign_in()
            assert err.value.refused == {"003": "40", "004": "40"}
            assert err.value.response_code == "40"
            text = str(err.value)
            assert "to scheme 003" in text and "to scheme 004" in text
            assert journalled(rig) == [("declined", "40"), ("declined", "40")]
            assert kept(rig) is None

    run(scenario())


def test_another_refusal_never_tries_another_scheme(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            rig.host.set_status(TID, "cancelled")
            with pytest.raises(SignInError) as err:
                await rig.agent.sender.sign_in()
            assert err.value.response_code == "97"
            assert seen(rig) == []  # the host refuses a cancelled terminal before the scheme
            assert journalled(rig) == [("declined", "97")]

    run(scenario())


def test_a_timeout_never_tries_another_scheme(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False, response_timeout=0.5) as rig:
            rig.server.faults.add("no-answer", mti="0800")
            with pytest.raises(HostLinkError):
                await rig.agent.sender.sign_in()
            assert seen(rig) == ["003"]
            assert journalled(rig) == [("failed", None)]
            assert kept(rig) is None

    run(scenario())


def test_the_selfcheck_names_the_refused_scheme(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            rig.host.set_accepted_schemes(POSP)
            await rig.agent.sender.sign_in()
            for requirement in (1, 4):  # the session's downloads: present
                await rig.agent.host_requests.run(requirement)
            context = Context(rig.config, rig.agent.journal, module=rig.agent.module)
            report = await run_checks(context, ["keys", "session"])
            for check in (report.get("keys"), report.get("session")):
                assert check.status is Status.OK, check
                assert "signed in with scheme 004 (the host refused 003 with 40)" in check.detail
                assert check.data["signin"] == {"scheme": "004", "refused": {"003": "40"}}

    run(scenario())


@pytest.mark.parametrize(
    ("code", "moving"),
    [("40", True), ("12", True), ("30", True), ("97", False), ("96", False), ("A0", False)],
)
def test_which_refusals_move_on_to_the_next_scheme(code: str, moving: bool) -> None:
    assert moves_on(code) is moving


def test_the_kept_scheme_goes_first_then_the_familys_order() -> None:
    assert negotiation_order(("003", "004"), None) == ("003", "004")
    assert negotiation_order(("003", "004"), "004") == ("004", "003")
    assert negotiation_order(("003", "004"), "001") == ("003", "004")  # not the family's


def test_the_approved_scheme_is_kept_though_the_module_refused_its_keys(tmp_path) -> None:
    """DESIGN.md section 4 keeps "the first the host approves": when the module then refuses
    the keys (its master key is not the host's), the repair's sign-in goes with that scheme at
    once, not through the host's 40 to 003 again."""
    from drivers.module import ModuleError

    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            rig.host.set_accepted_schemes(POSP)
            rig.host.register(TID, rig.config.terminal.mid, bytes(range(16)))  # another TMK
            with pytest.raises(ModuleError):
                await rig.agent.sender.sign_in()
            assert seen(rig) == ["003", "004"] and kept(rig) == "004"
            with pytest.raises(ModuleError):
                await rig.agent.sender.sign_in()
            assert seen(rig) == ["003", "004", "004"]

    run(scenario())
