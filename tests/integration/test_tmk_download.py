"""Remote master-key download (DESIGN.md sections 7 and 18, issue 23): a module whose TMK differs
from the host's recovers by itself with each of the three download forms and gets a purchase
approved; with ``off`` it escalates as before; at most one try per ``keys.tmk_download_every``;
a wrong KCV fails cleanly; no key material in the journal, the log or the events."""

import asyncio
import json
import logging

import pytest

from agent.config import KeysConfig
from agent.journal import Journal
from agent.keys.tmk_download import (
    EVENT,
    LAST_TRY,
    Tried,
    download_due,
    last_try,
    split_tag00,
)
from agent.recovery.engine import AskedByTheHost
from agent.recovery.policy import State, decide
from agent.selfcheck import Report
from agent.selfcheck.base import CheckResult, Status, Text
from agent.service.daemon import sign_in_at_start
from agent.sim.host import TEST_TMK
from agent.sim.module import SM4_SLOT, TEST_TRANSPORT_KEY
from agent.telemetry import events as telemetry_events
from agent.wire.mac import DES_FAMILY, SM4_FAMILY
from drivers.module import KeyFamily
from tests import independent_sm4
from tests.integration.gateway_rig import (
    MID,
    TID,
    app_purchase,
    exchange,
    gateway_rig,
    pin_purchase,
)

HOST_TMK = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")  # not the module's slot 0 TMK
THIRD_TMK = bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0")


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def wrapped(tmk: bytes) -> tuple[bytes, bytes]:
    """The TMK under the simulators' transport key, and its KCV."""
    return DES_FAMILY.cipher(TEST_TRANSPORT_KEY).encrypt(tmk), DES_FAMILY.kcv(tmk)


def downloads(journal) -> list[dict]:
    return [e for e in journal.events() if e["kind"] == EVENT]


def module_tmk(rig) -> bytes:
    return rig.module_port.simulator.state.slots[0]["TMK"]


def is_401(row: dict) -> bool:
    return json.loads(row["request"])["fields"].get("60", "").endswith("401")


def keys_only(section: str) -> dict:
    return {"keys": {"tmk_download": section}}


def working_keys(rig) -> list[bytes]:
    """The clear PIK, MAK and TDK of every session the host issued."""
    return [key for session in rig.host.sessions.values() for key in session.keys.values()]


def assert_no_key_material(rig, caplog) -> None:
    """Neither a clear TMK, working key, the transport key nor a ciphertext in the journal, the
    log, the events or what telemetry would publish of them."""
    journal = rig.agent.journal
    events = journal.events()
    told = [telemetry_events.forward(event["kind"], event) for event in events]  # the fleet's
    text = json.dumps([events, told, journal.transactions(), journal.outbox(1000)]) + caplog.text
    secrets = [TEST_TMK, HOST_TMK, THIRD_TMK, TEST_TRANSPORT_KEY, *(wrapped(HOST_TMK)[:1])]
    secrets += working_keys(rig)
    for secret in secrets:
        for form in (secret.hex(), secret.hex().upper()):
            assert form not in text


async def host_has_another_tmk(rig, tmk: bytes = HOST_TMK) -> None:
    """The acquirer holds another TMK for the terminal than the module, and lost the session."""
    rig.host.register(TID, MID, tmk)
    rig.host.forget(TID)


@pytest.mark.parametrize("form", ["0800-401", "signin-tag00", "tms"])
def test_each_form_recovers_a_purchase(tmp_path, caplog, form) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario():
        async with gateway_rig(tmp_path, sections=keys_only(form)) as rig:
            await host_has_another_tmk(rig)
            rig.host.tmk_in_signin = form == "signin-tag00"
            ciphertext, kcv = wrapped(HOST_TMK)
            serial = rig.module_port.simulator.state.serial
            rig.site.tms.put_tmk(serial, {"tmk": ciphertext.hex(), "kcv": kcv.hex()})
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "00"
            assert module_tmk(rig) == HOST_TMK
            journal = rig.agent.journal
            remedies = [(e["remedy"], e["ok"]) for e in journal.events()
                        if e["kind"] == "recovery.remedy"]  # fmt: skip
            # signin-tag00: the first sign-in of the repair brings the key, and it is loaded
            expected = [("sign-in", False), ("tmk-download", True)]
            assert remedies == ([("sign-in", True)] if form == "signin-tag00" else expected)
            [event] = downloads(journal)
            assert (event["form"], event["outcome"], event["kcv"]) == (
                form,
                "loaded",
                kcv.hex().upper(),
            )
            assert rig.host.tmk_downloads == (1 if form == "0800-401" else 0)
            if form == "0800-401":  # numbered and journalled like a download step
                [row] = [t for t in journal.transactions() if is_401(t)]
                assert row["state"] == "completed"
                assert json.loads(row["request"])["fields"]["60"] == "00000001401"
            assert rig.agent.recovery.state is State.REGISTERED
            assert_no_key_material(rig, caplog)

    run(scenario())


def test_the_start_up_sign_ins_tag00_loads_the_master_key(tmp_path, caplog) -> None:
    """DESIGN.md section 18: the host puts the master key in "the 0810 of the first sign-in",
    the start-up's here, and may not send it again: it is loaded then, before the working keys
    (nothing refused, no recovery). The same key in a later sign-in costs no LOAD_TMK."""
    caplog.set_level(logging.DEBUG)

    async def scenario():
        sections = keys_only("signin-tag00")
        async with gateway_rig(tmp_path, sign_in=False, sections=sections) as rig:
            await host_has_another_tmk(rig)
            rig.host.tmk_in_signin = True
            await sign_in_at_start(rig.agent)
            assert module_tmk(rig) == HOST_TMK
            assert rig.agent.recovery.state is State.REGISTERED
            kinds = [e["kind"] for e in rig.agent.journal.events()]
            assert "recovery.keys-refused" not in kinds
            [event] = downloads(rig.agent.journal)
            assert (event["form"], event["outcome"]) == ("signin-tag00", "loaded")
            # section 18: "reported to the fleet", though no recovery ran (its KCV, no key)
            told = telemetry_events.forward(event["kind"], event)
            assert told is not None
            assert (told[0], told[1]["code"]) == ("parameters-downloaded", "keys.tmk-downloaded")
            assert told[1]["detail"]["kcv"] == event["kcv"] and event["kcv"]
            await rig.agent.sender.sign_in()  # the host sends the same key again
            assert len(downloads(rig.agent.journal)) == 1
            rig.host.tmk_in_signin = False  # and then no more
            await rig.agent.sender.sign_in()
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "00"
            assert_no_key_material(rig, caplog)

    run(scenario())


def test_a_tag00_the_module_cannot_take_leaves_the_start_up_to_recovery(tmp_path) -> None:
    """The start-up's 0810 brings a master key the module cannot load (no transport key): the
    sign-in goes on under the module's own key, whose working keys the module refuses, and
    recovery says what a person must do (not a locked-out "registered" terminal answering 96,
    nor the registration's advice); the load is tried once in the period, not at every
    sign-in of the probe."""

    async def scenario():
        sections = {**keys_only("signin-tag00"), "recovery": {"probe_first": 0.05}}
        async with gateway_rig(tmp_path, sign_in=False, sections=sections) as rig:
            await host_has_another_tmk(rig)
            rig.host.tmk_in_signin = True
            rig.module_port.simulator.state.transport_key = None
            await sign_in_at_start(rig.agent)
            recovery = rig.agent.recovery
            assert recovery.state is State.UNREGISTERED
            assert recovery.cause == "keys.tmk-mismatch"
            await asyncio.sleep(0.5)  # the probe signs in again, and again
            assert module_tmk(rig) == TEST_TMK
            assert len([e for e in downloads(rig.agent.journal) if e["outcome"] == "failed"]) == 1
            answer = await exchange(rig.socket, app_purchase(1000))
            assert answer.text(39) == "97" and "keys.tmk-mismatch" in answer.text(63)

    run(scenario())


def test_start_up_sign_in_refused_by_the_module_downloads_and_signs_in(tmp_path, caplog) -> None:
    """The module refuses the keys of the start-up's sign-in (its master key is not the
    host's): recovery downloads the key (0800/401 here) and signs in again."""
    caplog.set_level(logging.DEBUG)

    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False, sections=keys_only("0800-401")) as rig:
            await host_has_another_tmk(rig)
            await sign_in_at_start(rig.agent)
            assert module_tmk(rig) == HOST_TMK
            assert rig.agent.recovery.state is State.REGISTERED
            kinds = [e["kind"] for e in rig.agent.journal.events()]
            assert "recovery.keys-refused" in kinds and "recovery.recovered" in kinds
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "00"
            assert_no_key_material(rig, caplog)

    run(scenario())


def test_no_master_key_at_all_at_start_is_downloaded_and_a_purchase_approved(tmp_path) -> None:
    """DESIGN.md section 18: "the self-check finds no TMK", at start-up too. The module answers
    the sign-in's keys 03 (key absent): that is the download's trigger as 04 is, not a local 96
    to every sale."""

    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False, sections=keys_only("0800-401")) as rig:
            rig.host.register(TID, MID, HOST_TMK)
            rig.module_port.simulator.state.slots[0].pop("TMK")
            await sign_in_at_start(rig.agent)
            assert module_tmk(rig) == HOST_TMK
            assert rig.agent.recovery.state is State.REGISTERED
            assert rig.host.tmk_downloads == 1
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"

    run(scenario())


def test_with_off_the_terminal_escalates_as_before(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            await host_has_another_tmk(rig)
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) != "00"
            assert rig.agent.recovery.state is State.UNREGISTERED
            assert module_tmk(rig) == TEST_TMK
            assert downloads(rig.agent.journal) == []
            assert rig.host.tmk_downloads == 0

    run(scenario())


def test_with_off_a_start_up_keys_refusal_says_the_master_key_differs(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            await host_has_another_tmk(rig)
            await sign_in_at_start(rig.agent)
            recovery = rig.agent.recovery
            assert recovery.state is State.UNREGISTERED
            assert "master key" in recovery.message.en
            assert downloads(rig.agent.journal) == []

    run(scenario())


def test_at_most_one_download_per_period(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections=keys_only("0800-401")) as rig:
            await host_has_another_tmk(rig)
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            await host_has_another_tmk(rig, THIRD_TMK)  # a second trigger within the hour
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) != "00"
            assert rig.host.tmk_downloads == 1
            assert len(downloads(rig.agent.journal)) == 1
            assert module_tmk(rig) == HOST_TMK

    run(scenario())


def test_a_wrong_kcv_fails_cleanly(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario():
        async with gateway_rig(tmp_path, sections=keys_only("tms")) as rig:
            await host_has_another_tmk(rig)
            ciphertext, _ = wrapped(HOST_TMK)
            serial = rig.module_port.simulator.state.serial
            rig.site.tms.put_tmk(serial, {"tmk": ciphertext.hex(), "kcv": "00000000"})
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) != "00"
            assert module_tmk(rig) == TEST_TMK  # not replaced
            [event] = downloads(rig.agent.journal)
            assert event["outcome"] == "failed" and "status 04" in event["detail"]
            assert event["kcv"] == "00000000"
            assert_no_key_material(rig, caplog)

    run(scenario())


def test_a_failed_download_is_tried_again_by_the_probe_once_due(tmp_path) -> None:
    """DESIGN.md section 18: at most one download per keys.tmk_download_every, not one ever:
    the unregistered terminal's probe downloads again once that has passed, and the purchase
    after it is approved without a technician."""

    async def scenario():
        sections = {"keys": {"tmk_download": "tms", "tmk_download_every": 1},
                    "recovery": {"probe_first": 0.3, "probe_max": 0.5}}  # fmt: skip
        async with gateway_rig(tmp_path, sections=sections) as rig:
            await host_has_another_tmk(rig)
            ciphertext, kcv = wrapped(HOST_TMK)
            serial = rig.module_port.simulator.state.serial
            rig.site.tms.put_tmk(serial, {"tmk": ciphertext.hex(), "kcv": "00000000"})
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) != "00"
            assert rig.agent.recovery.state is State.UNREGISTERED
            rig.site.tms.put_tmk(serial, {"tmk": ciphertext.hex(), "kcv": kcv.hex()})
            for _ in range(100):
                if rig.agent.recovery.state is State.REGISTERED:
                    break
                await asyncio.sleep(0.05)
            assert rig.agent.recovery.state is State.REGISTERED
            assert module_tmk(rig) == HOST_TMK
            assert [e["outcome"] for e in downloads(rig.agent.journal)][-1] == "loaded"
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"

    run(scenario())


def test_the_policy_downloads_first_where_offered() -> None:
    absent = Report(
        [CheckResult("keys", Status.FAIL, Text("no TMK", "无"), finding="tmk-absent")], 1
    )
    assert decide(absent) == []  # a person must act
    assert decide(absent, tmk_download=True) == ["tmk-download", "sign-in"]
    healthy = Report([CheckResult("keys", Status.OK, Text("ok", "好"))], 1)
    assert decide(healthy, "97", keys_refused=True, tmk_download=True)[0] == "tmk-download"
    assert "tmk-download" not in decide(healthy, "97", keys_refused=True)


def test_the_period_between_downloads_is_the_boots_not_the_wall_clocks(tmp_path) -> None:
    """At most one try per keys.tmk_download_every, measured on the uptime within one boot: a
    step of the wall clock (the sync-clock remedy's) neither shortens nor ends it. Across boots
    the wall clock; a try in its future was under a clock wrong then: not a reason to wait."""
    keys = KeysConfig(tmk_download="tms", tmk_download_every=3600)
    tried = Tried(1_000_000.0, "boot-a", 500.0)
    assert not download_due(keys, tried, Tried(tried.at - 50, "boot-a", 510.0))  # stepped back
    assert not download_due(keys, tried, Tried(tried.at + 7200, "boot-a", 510.0))  # forward
    assert download_due(keys, tried, Tried(tried.at + 10, "boot-a", 4100.0))
    assert not download_due(keys, tried, Tried(tried.at + 600, "boot-b", 30.0))
    assert download_due(keys, tried, Tried(tried.at + 3600, "boot-b", 30.0))
    assert download_due(keys, tried, Tried(tried.at - 86_400, "boot-b", 30.0))
    assert download_due(keys, None, Tried.now())
    assert not download_due(KeysConfig(), None, Tried.now())  # "off"
    assert Tried.parse("1000000.5", "boot-a 12.5") == Tried(1_000_000.5, "boot-a", 12.5)
    assert Tried.parse("1000000.5", None) == Tried(1_000_000.5)  # an older version's record

    async def kept() -> tuple[str | None, Tried | None]:
        journal = Journal(tmp_path / "journal.sqlite3")
        try:
            await Tried.now().remember(journal)
            return journal.recall(LAST_TRY), await last_try(journal)
        finally:
            journal.close()

    plain, read = asyncio.run(kept())
    assert plain is not None and float(plain) > 0  # what an earlier version reads (a rollback)
    assert read is not None and read.boot == Tried.now().boot


def test_tag00_is_taken_out_by_length() -> None:
    keys = bytes(range(40))  # layout 2's length
    tag = b"\x00" + bytes(20)
    tmk, rest = split_tag00(tag + keys, "003")
    assert tmk is not None and rest == keys
    assert split_tag00(keys, "003") == (None, keys)
    assert split_tag00(b"\x01" + bytes(20) + keys, "003")[0] is None


def test_a_module_without_a_transport_key_fails_the_download_and_says_so(tmp_path) -> None:
    """LOAD_TMK's 03: the module cannot take a remote key at all; the download fails with the
    reason, the slot keeps its key, and the terminal is not left charged or looping."""

    async def scenario():
        async with gateway_rig(tmp_path, sections=keys_only("0800-401")) as rig:
            await host_has_another_tmk(rig)
            rig.module_port.simulator.state.transport_key = None
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) != "00"
            assert module_tmk(rig) == TEST_TMK
            [event] = downloads(rig.agent.journal)
            assert event["outcome"] == "failed" and "no transport key" in event["detail"]
            assert "status 03" in event["detail"]
            # the merchant is told the download failed and why, not that it will be done
            assert rig.agent.recovery.state is State.UNREGISTERED
            told = rig.agent.recovery.message
            assert "master-key download failed: " in told.en.lower() and "status 03" in told.en
            assert told.en.count("download failed") == 1 and "tries again" in told.en
            assert "will download" not in told.en and "定期重试" in told.zh

    run(scenario())


def test_the_self_checks_tmk_absent_says_who_acts(tmp_path) -> None:
    """No master key in the slot: with a download configured (and none tried lately) the agent
    will fetch it; without one, a person must act."""
    from agent.selfcheck import run_checks

    async def finding(rig) -> tuple[str, str]:
        report = await run_checks(rig.agent.remedies.check_context(), ["keys"])
        keys = report.get("keys")
        assert keys is not None and keys.remedy is not None
        return keys.finding, keys.remedy.en

    async def scenario():
        async with gateway_rig(tmp_path / "with", sections=keys_only("0800-401")) as rig:
            rig.module_port.simulator.state.slots[0].pop("TMK")
            found, remedy = await finding(rig)
            assert found == "tmk-absent" and "the agent will download the master key" in remedy
        async with gateway_rig(tmp_path / "without") as rig:
            rig.module_port.simulator.state.slots[0].pop("TMK")
            found, remedy = await finding(rig)
            assert found == "tmk-absent" and "call support" in remedy

    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    run(scenario())


def test_the_recovered_event_names_the_download_it_took(tmp_path) -> None:
    """The fleet hears of a download through the recovery's ``recovered`` event (DESIGN.md
    section 14's kinds have no kind of their own for it): its remedies are the ones run, the
    download the policy added after the module refused the keys included."""

    async def scenario():
        async with gateway_rig(tmp_path, sections=keys_only("0800-401")) as rig:
            await host_has_another_tmk(rig)
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            [recovered] = [e for e in rig.agent.journal.events()
                           if e["kind"] == "recovery.recovered"]  # fmt: skip
            kind, detail = telemetry_events.forward(recovered["kind"], recovered)
            assert kind == "recovered"
            assert detail["code"] == "recovery.recovered"
            assert detail["detail"]["remedies"] == ["sign-in", "tmk-download"]

    run(scenario())


@pytest.mark.parametrize("form", ["0800-401", "signin-tag00", "tms"])
def test_an_sm4_terminal_recovers_its_master_key_with_each_form(tmp_path, caplog, form) -> None:
    """Slot 1 (SM4): the acquirer's TMK differs from the module's; the download brings it with
    an SM4 KCV (computed here by the independent SM4), the module loads it into the SM4 slot,
    the 006 sign-in's keys load, and a purchase and a PIN purchase are approved with the SM4
    MAC and PIN block the host verifies."""
    caplog.set_level(logging.DEBUG)

    async def scenario():
        sections = {"module": {"key_slot": SM4_SLOT}, **keys_only(form)}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            rig.host.register(TID, MID, HOST_TMK, SM4_FAMILY)
            rig.host.forget(TID)
            rig.host.tmk_in_signin = form == "signin-tag00"
            ciphertext = DES_FAMILY.cipher(TEST_TRANSPORT_KEY).encrypt(HOST_TMK)
            kcv = independent_sm4.kcv(HOST_TMK)
            serial = rig.module_port.simulator.state.serial
            rig.site.tms.put_tmk(serial, {"tmk": ciphertext.hex(), "kcv": kcv.hex()})
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            slot = rig.module_port.simulator.state.slots[SM4_SLOT]
            assert slot["TMK"] == HOST_TMK
            assert rig.module_port.simulator.state.family(SM4_SLOT) is KeyFamily.SM4
            [event] = downloads(rig.agent.journal)
            assert (event["outcome"], event["kcv"]) == ("loaded", kcv.hex().upper())
            assert "SM4" in event["detail"]
            assert rig.host.state()["sessions"][TID] == {"scheme": "006", "layout": 8}
            response = await exchange(rig.socket, await pin_purchase(rig, 1200))
            assert response.text(39) == "00", response
            state = rig.host.state()
            assert (state["pins_verified"], state["pin_failures"], state["mac_failures"]) == (
                1,
                0,
                0,
            )
            assert_no_key_material(rig, caplog)

    run(scenario())


def test_the_host_registry_keeps_a_terminals_key_family(tmp_path) -> None:
    """The simulator's registry says which family a terminal's TMK is (the KCV of a downloaded
    key is that family's); an entry without one is DES, an unknown one is no registry."""
    from agent.sim.host import AcquirerHost

    registry = tmp_path / "registry.json"
    host = AcquirerHost(registry)
    host.register("20000002", "898100012340002", HOST_TMK, SM4_FAMILY)
    again = AcquirerHost(registry)
    assert again.terminals["20000002"].family is SM4_FAMILY
    assert again.terminals[TID].family is DES_FAMILY
    raw = json.loads(registry.read_text())
    raw["terminals"][0]["family"] = "AES"
    registry.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="family 'AES' is not DES or SM4"):
        again.reload()


@pytest.mark.parametrize("asked_by", ["technician", "host"])
def test_a_sign_in_asked_for_whose_keys_the_module_refuses_downloads_the_key(
    tmp_path, asked_by
) -> None:
    """DESIGN.md section 18: the module refusing an approved sign-in's keys is a recovery
    trigger of its own, whoever asked for the sign-in: a technician's `agent signin`, the
    host's requirement 3 (the light check's goes the same way)."""

    async def scenario():
        async with gateway_rig(tmp_path, sections=keys_only("0800-401")) as rig:
            await host_has_another_tmk(rig)
            recovery = rig.agent.recovery
            if asked_by == "technician":
                done = await recovery.sign_in("a technician's sign-in succeeded")
            else:
                done = await AskedByTheHost(recovery).sign_in()
            assert "recovery repaired it" in done
            assert module_tmk(rig) == HOST_TMK
            assert recovery.state is State.REGISTERED
            kinds = [e["kind"] for e in rig.agent.journal.events()]
            assert "recovery.keys-refused" in kinds and "recovery.recovered" in kinds
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"

    run(scenario())
