"""Field 59 `A5`, the terminal's location (DESIGN.md sections 4 and 17), through a real agent with
``registration.location = true`` and a real `location` hook: what reaches the host (read off the
host simulator's own frames), and that no purchase ever waits for the hook."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.registration.location import ASK_PAUSE
from agent.wire import field59
from tests.integration.gateway_rig import app_purchase, exchange, gateway_rig
from tests.integration.test_registration import seen_by_host

LOCATED = {"registration": {"location": True}}


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def location_hook(tmp_path: Path, script: str) -> Path:
    """A `location` hook installed as an image does (owned by root, the tests' user; mode 0755;
    directories 0755) that appends a line to a file (returned) each time it runs, then runs
    ``script`` (shell)."""
    runs = tmp_path / "location-runs"
    folder = tmp_path / "hooks.d" / "location"
    folder.mkdir(parents=True, exist_ok=True)
    for directory in (folder.parent, folder):
        directory.chmod(0o755)
    hook = folder / "50-where"
    hook.write_text(f"#!/bin/sh\necho run >> {runs}\n{script}\n")
    hook.chmod(0o755)
    return runs


def runs_of(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


async def hook_answered(rig) -> None:
    """Until the agent's question to the location hook, started by a sale, has its answer."""
    asking = rig.agent.location._asking
    assert asking is not None, "no sale asked the location hook"
    await asyncio.wait_for(asyncio.shield(asking), 30)


def usages(message) -> tuple[str, ...]:
    return field59.Field59.parse(message.binary(59)).tags


def a5_of(message) -> list[tuple[str, str]]:
    value = field59.find_usage(message.binary(59), "A5")
    assert value is not None, usages(message)
    return [(s.tag, s.value) for s in field59.parse_subusages(value, "A5")]


def test_a_slow_hook_holds_up_no_purchase_and_its_answer_goes_with_the_next(tmp_path) -> None:
    """The first purchase leaves without A5 and is answered while the hook it started still
    runs (the hook cannot finish before the test lets it); once the hook has printed, the next
    purchase carries A5 after A2, its sub-usages in section 4's order whatever the hook's order,
    what A5 does not carry left out."""
    gate = tmp_path / "gate"
    printed = (
        '{"cid": "2a1f", "latitude": "31.23", "mcc": "460", "coordinate_system": "GCJ02", '
        '"longitude": "121.47", "altitude": "4"}'
    )

    async def scenario():
        async with gateway_rig(tmp_path, sections=LOCATED) as rig:
            runs = location_hook(
                tmp_path, f"while [ ! -e {gate} ]; do sleep 0.05; done\necho '{printed}'"
            )
            seen = seen_by_host(rig)
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            assert not rig.agent.location._asking.done()  # the hook has not answered yet
            assert usages(seen[-1]) == ("A2",)
            while not runs_of(runs):  # the hook the purchase started is running
                await asyncio.sleep(0.01)

            gate.touch()
            await hook_answered(rig)
            assert (await exchange(rig.socket, app_purchase(1100))).text(39) == "00"
            assert usages(seen[-1]) == ("A2", "A5")
            assert a5_of(seen[-1]) == [
                ("01", "121.47"), ("02", "31.23"), ("05", "GCJ02"), ("03", "460"), ("07", "2a1f"),
            ]  # fmt: skip
            assert rig.host.ledger.mac_failures == 0  # A5 lies inside the MAB
            assert runs_of(runs) == 1

    run(scenario())


def test_a_location_by_sub_usage_number(tmp_path) -> None:
    """A hook may name the sub-usages by their numbers (the cell: MCC, MNC, LAC, CID)."""

    async def scenario():
        async with gateway_rig(tmp_path, sections=LOCATED) as rig:
            location_hook(
                tmp_path, """echo '{"07": "2a1f", "06": "1806", "04": "00", "03": "460"}'"""
            )
            seen = seen_by_host(rig)
            assert (await exchange(rig.socket, app_purchase(1200))).text(39) == "00"
            await hook_answered(rig)
            assert (await exchange(rig.socket, app_purchase(1300))).text(39) == "00"
            assert a5_of(seen[-1]) == [("03", "460"), ("04", "00"), ("06", "1806"), ("07", "2a1f")]

    run(scenario())


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ("echo 'not json'", "printed invalid JSON"),
        ("exit 0", "printed no location"),
        ("""echo '{"speed": "3"}'""", "no A5 sub-usage"),
        ("""echo '{"longitude": "121.47", "latitude": "%s"}'""" % ("3" * 40),
         "is not a short ASCII value"),
        ("""printf '{"longitude": "121.47\\\\u0007"}'""", "longitude holds control characters"),
    ],
    ids=["garbage", "nothing", "no-sub-usage", "too-long", "control-character"],
)  # fmt: skip
def test_a_hook_without_a_usable_location_leaves_a5_out(tmp_path, script, why) -> None:
    """The hook answers nothing A5 can carry: the purchases go on, approved, without A5."""

    async def scenario():
        async with gateway_rig(tmp_path, sections=LOCATED) as rig:
            runs = location_hook(tmp_path, script)
            seen = seen_by_host(rig)
            assert (await exchange(rig.socket, app_purchase(1400))).text(39) == "00"
            await hook_answered(rig)
            assert runs_of(runs) == 1
            assert why in rig.agent.location.last_error, rig.agent.location.last_error
            assert (await exchange(rig.socket, app_purchase(1500))).text(39) == "00"
            assert usages(seen[-1]) == ("A2",)

    run(scenario())


@pytest.mark.parametrize(
    "script", ["exit 1", "exit 75", "echo 'not json'"], ids=["failed", "try-later", "garbage"]
)
def test_a_failing_hook_is_not_started_once_per_sale(tmp_path, script) -> None:
    """Five sales while the hook fails: it ran once. Only after ASK_PAUSE (the agent's clock
    moved on) does a sale ask it again."""

    async def scenario():
        async with gateway_rig(tmp_path, sections=LOCATED) as rig:
            runs = location_hook(tmp_path, script)
            seen = seen_by_host(rig)
            for amount in range(1600, 1650, 10):
                assert (await exchange(rig.socket, app_purchase(amount))).text(39) == "00"
                await hook_answered(rig)
                assert usages(seen[-1]) == ("A2",)
            assert runs_of(runs) == 1

            rig.agent.location._monotonic = lambda: time.monotonic() + ASK_PAUSE
            assert (await exchange(rig.socket, app_purchase(1700))).text(39) == "00"
            await hook_answered(rig)
            assert runs_of(runs) == 2

    run(scenario())


def test_an_apps_own_a5_is_kept_and_not_doubled(tmp_path) -> None:
    """The agent has a location from the hook; a purchase whose app sent its own A5 leaves with
    the app's A5 only (and the agent's A2 after it); the next one without 59 gets the hook's."""
    own = field59.build_a5({"longitude": "116.40", "latitude": "39.90"})

    async def scenario():
        async with gateway_rig(tmp_path, sections=LOCATED) as rig:
            location_hook(tmp_path, """echo '{"longitude": "121.47", "latitude": "31.23"}'""")
            seen = seen_by_host(rig)
            assert (await exchange(rig.socket, app_purchase(1800))).text(39) == "00"
            await hook_answered(rig)

            request = app_purchase(1900)
            request.fields[59] = field59.with_usage(None, "A5", own)
            assert (await exchange(rig.socket, request)).text(39) == "00"
            assert usages(seen[-1]) == ("A5", "A2")
            assert field59.find_usage(seen[-1].binary(59), "A5") == own

            assert (await exchange(rig.socket, app_purchase(2000))).text(39) == "00"
            assert a5_of(seen[-1]) == [("01", "121.47"), ("02", "31.23")]
            assert rig.host.ledger.mac_failures == 0

    run(scenario())


def test_a_location_that_does_not_fit_the_profiles_field_59_is_left_out(tmp_path) -> None:
    """An acquirer's profile holds 59 to 120 bytes: the A2 fits, A2 with the hook's A5 does not.
    A5 is optional: the purchases go out with A2 alone, approved, not answered 96 unsent."""
    profile = tmp_path / "acquirer.toml"
    profile.write_text('name = "acquirer"\n[fields.59]\nmax = 120\n')
    sections = {**LOCATED, "wire": {"profile": str(profile)}}
    where = (
        '{"longitude": "121.4737", "latitude": "31.2304", "coordinate_system": "GCJ02", '
        '"mcc": "460", "mnc": "00", "lac": "1806", "cid": "2a1f"}'
    )

    async def scenario():
        async with gateway_rig(tmp_path, sections=sections) as rig:
            location_hook(tmp_path, f"echo '{where}'")
            seen = seen_by_host(rig)
            assert (await exchange(rig.socket, app_purchase(2050))).text(39) == "00"
            await hook_answered(rig)
            answer = await exchange(rig.socket, app_purchase(2060))
            assert answer.text(39) == "00", answer.get(63)
            assert usages(seen[-1]) == ("A2",)

    run(scenario())


def test_without_the_setting_the_hook_is_never_asked(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            runs = location_hook(tmp_path, """echo '{"longitude": "121.47"}'""")
            seen = seen_by_host(rig)
            assert (await exchange(rig.socket, app_purchase(2100))).text(39) == "00"
            assert usages(seen[-1]) == ("A2",)
            assert rig.agent.location._asking is None and runs_of(runs) == 0

    run(scenario())


def test_a_retry_after_recovery_carries_its_first_tries_field_59(tmp_path) -> None:
    """DESIGN.md section 4: a retry after recovery carries the original's 59 unchanged. The
    first try leaves without A5 (no location known yet); by the retry one is known, yet the
    retry goes out with exactly the first try's field 59."""
    from tests.integration.test_registration import acquirer_checks_tusn

    async def scenario():
        async with gateway_rig(tmp_path, sections=LOCATED) as rig:
            acquirer_checks_tusn(rig, reported=False)
            known = iter([None])  # nothing at the first try, a location from then on
            rig.agent.location.a5 = lambda: next(known, field59.build_a5({"mcc": "460"}))
            seen = seen_by_host(rig)
            answer = await exchange(rig.socket, app_purchase(1200))
            assert answer.text(39) == "97"
            purchases = [m for m in seen if m.mti == "0200"]
            assert len(purchases) == 2  # the first try and its retry after the sign-in
            assert usages(purchases[0]) == ("A2",)
            assert purchases[0].binary(59) == purchases[1].binary(59)
            assert usages(await _next_purchase(rig, seen)) == ("A2", "A5")  # a new request

    run(scenario())


async def _next_purchase(rig, seen):
    await exchange(rig.socket, app_purchase(1300))
    return [m for m in seen if m.mti == "0200"][-1]
