"""97 recovery end to end: app -> gateway -> host simulator over TCP, module simulator on a pty,
TMS simulator over HTTP, hooks as real executables. One test per row of the decision table."""

import asyncio
import contextlib
import dataclasses
import json
import stat

import pytest

from agent.recovery.policy import State
from agent.recovery.remedies import reconfigure
from agent.service.daemon import sign_in_at_start
from agent.sim.module import SM4_SLOT
from agent.telemetry.events import forward
from agent.wire.message import Message
from tests.integration.gateway_rig import (
    MID,
    TID,
    app_purchase,
    exchange,
    gateway_rig,
    pin_purchase,
    reversal_of,
)

# the payment app's own sign-in (60.3 003: double-length keys)
APP_SIGNIN = Message("0800", {11: "000321", 60: "00000000003", 63: "001"})


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def kinds(journal) -> list[str]:
    return [e["kind"] for e in journal.events() if e["kind"].startswith("recovery.")]


def remedies(journal) -> list[tuple[str, bool]]:
    return [(e["remedy"], e["ok"]) for e in journal.events() if e["kind"] == "recovery.remedy"]


def purchases_sent(rig) -> int:
    return rig.host.state()["requests"].get("0200", 0)


def recording_hook(tmp_path, event: str):
    """An executable hook that appends the JSON it is given to a file."""
    out = tmp_path / f"{event}.jsonl"
    folder = tmp_path / "hooks.d" / event
    folder.mkdir(parents=True, exist_ok=True)
    hook = folder / "10-record"
    hook.write_text(f"#!/bin/sh\ncat >> {out}\necho >> {out}\n")
    hook.chmod(stat.S_IRWXU)
    return out


def test_forgotten_session_signs_in_and_the_retry_is_approved(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.put_tms()
            rig.host.forget(TID)
            response = await exchange(rig.socket, app_purchase(1000, app_stan=321))
            assert (response.text(39), response.text(11)) == ("00", "000321")
            journal = rig.agent.journal
            assert remedies(journal) == [("sign-in", True)]
            assert kinds(journal) == [
                "recovery.refused", "recovery.self-check", "recovery.plan", "recovery.remedy",
                "recovery.retried", "recovery.recovered",
            ]  # fmt: skip
            assert purchases_sent(rig) == 2  # the refused one and the approved retry
            assert journal.queued_reversals() == []  # a 97 is a definite decline
            stans = [t["stan"] for t in journal.transactions() if t["mti"] == "0200"]
            assert len(set(stans)) == 2  # the retry is a new transaction

    run(scenario())


@pytest.mark.parametrize("slot", [0, SM4_SLOT], ids=["DES", "SM4"])
def test_a_pin_purchase_is_not_retried_under_the_pin_key_the_sign_in_replaced(
    tmp_path, slot
) -> None:
    """The host lost the session: a PIN purchase is refused 97 and the repair signs in, which
    brings a new PIN key. The app's PIN block (52, or 59 A1 on an SM4 terminal) is encrypted
    under the old one: sent again, the host would read a wrong PIN (and count it against the
    card). The app gets 96 `recovery.pin-again`; the terminal is registered and the next PIN
    purchase, its block made under the new key, is approved."""

    async def scenario():
        async with gateway_rig(tmp_path, sections={"module": {"key_slot": slot}}) as rig:
            purchase = await pin_purchase(rig, 1000)
            rig.host.forget(TID)
            answer = await exchange(rig.socket, purchase)
            assert answer.text(39) == "96"
            assert answer.text(63).startswith("AGENT recovery.pin-again: "), answer.get(63)
            ledger = rig.host.state()
            assert (ledger["pin_failures"], ledger["pins_verified"]) == (0, 0)
            assert purchases_sent(rig) == 1  # the refused one only
            journal = rig.agent.journal
            assert remedies(journal) == [("sign-in", True)]
            assert "recovery.not-retried" in kinds(journal)
            assert rig.agent.recovery.state is State.REGISTERED
            # the sale again, under its STAN, the PIN entered again: sent, not the 97 replayed
            stan = int(purchase.text(11))
            again = await exchange(rig.socket, await pin_purchase(rig, 1000, app_stan=stan))
            assert again.text(39) == "00", again.get(63)
            assert rig.host.state()["pins_verified"] == 1

    run(scenario())


def test_pin_purchases_refused_after_a_sign_in_are_the_requests_not_a_sign_in_each(
    tmp_path,
) -> None:
    """The acquirer has not reported the TUSN: PIN purchases are refused 97. The first one's
    repair signs in (approved) and does not send it again (its PIN block is stale): 96, enter
    the PIN again. The next, its block under the new key, refused the same way after that
    approved sign-in, is what the retry would have met: the request's refusal (97 and the
    finding), no second sign-in; the one after it the same, at once."""
    from tests.integration.test_registration import acquirer_checks_tusn, events_of, sign_ins

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            acquirer_checks_tusn(rig, reported=False)
            told, signed = [], []
            for amount in (2000, 2100, 2200):
                before = sign_ins(rig)
                answer = await exchange(rig.socket, await pin_purchase(rig, amount))
                told.append((answer.text(39), answer.text(63).split(":")[0]))
                signed.append(sign_ins(rig) - before)
            assert told == [
                ("96", "AGENT recovery.pin-again"),
                ("97", "AGENT registration.tusn-refused"),
                ("97", "AGENT registration.tusn-refused"),
            ]
            assert signed == [1, 0, 0]
            assert rig.agent.recovery.state is State.REGISTERED
            assert rig.agent.recovery.counts["recoveries"] == 0  # none was a recovery
            assert len(events_of(rig, "request-refused")) == 2

    run(scenario())


def test_a_pin_purchase_refused_during_anothers_repair_is_not_retried_after_it(tmp_path) -> None:
    """Two purchases in flight when the host loses the session: the first's 97 starts the
    repair (a sign-in, a new PIN key), the PIN purchase's 97 waits for it. The plain purchase
    is retried and approved; the PIN purchase is answered 96 `recovery.pin-again`, unsent."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            with_pin = await pin_purchase(rig, 2000)
            rig.host.forget(TID)
            for _ in range(2):  # both refused, each answer 0.3 s after it was sent
                rig.server.faults.add("slow", delay=0.3, mti="0200")
            first = asyncio.create_task(exchange(rig.socket, app_purchase(1000)))
            await asyncio.sleep(0.1)
            answer = await exchange(rig.socket, with_pin)
            assert answer.text(39) == "96"
            assert answer.text(63).startswith("AGENT recovery.pin-again: "), answer.get(63)
            assert (await first).text(39) == "00"
            assert "recovery.retried" in kinds(rig.agent.journal)  # the first one's repair
            assert purchases_sent(rig) == 3  # both refused, the plain one's retry
            assert rig.host.state()["pin_failures"] == 0

    run(scenario())


def test_a_repetition_of_a_retried_sale_the_app_reversed_is_a_new_request(tmp_path) -> None:
    """The sale got 97, recovery signed in and its retry was approved; the app reversed it
    with its own 0400. A repetition of the sale is a new request (section 10), not the first
    try's 97 replayed."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.put_tms()
            rig.host.forget(TID)
            sale = app_purchase(1000, app_stan=321)
            assert (await exchange(rig.socket, sale)).text(39) == "00"
            assert (await exchange(rig.socket, reversal_of(sale))).text(39) == "00"
            assert purchases_sent(rig) == 2
            again = await exchange(rig.socket, sale)
            assert (again.text(39), again.text(11)) == ("00", "000321")
            assert purchases_sent(rig) == 3  # sent: not the first try's 97 again

    run(scenario())


def test_wrong_tid_in_config_is_reprovisioned_from_the_tms(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.put_tms(tid=TID)
            # a technician keys in a wrong TID (and the agent reloads its configuration)
            wrong = dataclasses.replace(rig.config.terminal, tid="10000009")
            reconfigure(
                rig.agent.settings, rig.agent.link, dataclasses.replace(rig.config, terminal=wrong)
            )
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "00"
            assert remedies(rig.agent.journal) == [("provision", True)]
            assert rig.agent.config.terminal.tid == TID
            saved = json.loads((tmp_path / "provisioning.json").read_text())
            assert saved["tid"] == TID and saved["source"].startswith("TMS http://127.0.0.1:")
            [purchase] = rig.host.state()["purchases"]
            assert purchase.startswith(f"{TID}/")

    run(scenario())


def test_stale_keys_sign_in_and_the_retry_is_approved(tmp_path) -> None:
    """Keys in the module that are not the session's: the host answers A0 (MAC error)."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.put_tms()
            from agent.sim.module import TEST_TMK
            from agent.wire.working_keys import issue_working_keys

            stale = {"PIK": bytes(range(16)), "MAK": bytes(range(16, 32))}
            field62 = issue_working_keys(TEST_TMK, 2, stale).to_field62()
            await asyncio.to_thread(rig.agent.module.load_working_keys, 0, 2, field62)
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "00"
            events = rig.agent.journal.events()
            [check] = [e for e in events if e["kind"] == "recovery.self-check"]
            [keys] = [r for r in check["results"] if r.startswith("keys ")]
            assert keys.startswith("keys fail: the module's keys are not those")
            assert remedies(rig.agent.journal) == [("sign-in", True)]

    run(scenario())


def test_primary_refusing_fails_over_to_the_backup(tmp_path) -> None:
    """The primary host lost the terminal (a host-side fault); the backup still knows it."""

    async def scenario():
        async with gateway_rig(tmp_path, backup=True) as rig:
            primary_only = await _second_host_without_the_terminal(tmp_path / "primary")
            async with primary_only as (address, _):
                reconfigure(
                    rig.agent.settings,
                    rig.agent.link,
                    _with_hosts(rig.config, address, rig.config.host.primary),
                )
                rig.put_tms()
                response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "00"
            assert ("fail-over", True) in remedies(rig.agent.journal)
            assert rig.agent.link.status.endpoint == str(rig.config.host.primary)

    run(scenario())


def test_cancelled_terminal_becomes_unregistered_with_a_message(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(
            tmp_path,
            sections={
                "terminal": {"support_phone": "95516"},
                "recovery": {"probe_first": 30},
            },
        ) as rig:
            rig.put_tms()
            unregistered = recording_hook(tmp_path, "on-unregistered")
            displayed = recording_hook(tmp_path, "display-message")
            rig.host.set_status(TID, "cancelled")
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "97"
            assert rig.agent.recovery.state is State.UNREGISTERED
            assert remedies(rig.agent.journal) == [("sign-in", False), ("provision", False)]
            sent = purchases_sent(rig)
            assert sent == 1  # remedies failed: the purchase was never retried
            # from now on: answered at once, no financial request reaches the host
            for _ in range(3):  # new sales, each its own STAN (a repeated one gets its answer)
                held = await exchange(rig.socket, app_purchase(1000))
                assert held.text(39) == "97"
                assert held.text(63).startswith(
                    "AGENT host.97-after-signin: terminal not registered"
                )
            assert purchases_sent(rig) == sent
            await rig.agent.hooks.told()
            for path in (unregistered, displayed):
                [payload] = [json.loads(line) for line in path.read_text().splitlines() if line]
                assert (payload["tid"], payload["mid"]) == (TID, MID)
                assert "95516" in payload["message"]["zh"] and "95516" in payload["message"]["en"]
                assert "终端未登记" in payload["message"]["zh"]
                assert "terminal not registered" in payload["message"]["en"]

    run(scenario())


def test_unregistered_terminal_recovers_when_the_probe_signs_in(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"recovery": {"probe_first": 0.2}}) as rig:
            rig.put_tms()
            rig.host.set_status(TID, "cancelled")
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "97"
            assert rig.agent.recovery.state is State.UNREGISTERED
            rig.host.set_status(TID, "active")  # the acquirer registered it again
            for _ in range(50):
                if rig.agent.recovery.state is State.REGISTERED:
                    break
                await asyncio.sleep(0.1)
            assert rig.agent.recovery.state is State.REGISTERED
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            assert "recovery.registered-again" in kinds(rig.agent.journal)

    run(scenario())


def test_each_probe_sign_in_refused_is_a_refusal_the_fleet_hears_of(tmp_path) -> None:
    """While the host still refuses the terminal, each of the probe's refused sign-ins is a 97
    the fleet hears of (an incident stays open while its terminals are refused, DESIGN.md
    section 14) and the status's last refusal."""

    async def scenario():
        async with gateway_rig(tmp_path, sections={"recovery": {"probe_first": 0.1}}) as rig:
            rig.put_tms()
            rig.host.set_status(TID, "cancelled")
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "97"
            assert rig.agent.recovery.state is State.UNREGISTERED

            def refusals() -> list[dict]:
                events = rig.agent.journal.events()
                return [e for e in events if e["kind"] == "recovery.refused"]

            told = len(refusals())
            for _ in range(100):
                if len(refusals()) >= told + 2:
                    break
                await asyncio.sleep(0.05)
            probes = refusals()[told:]
            assert len(probes) >= 2 and {e["code"] for e in probes} == {"97"}
            assert [forward(e["kind"], e)[0] for e in probes[:2]] == ["97", "97"]
            assert rig.agent.recovery.last_refusal["mti"] == "0810"
            assert rig.agent.recovery.counts["97"] >= 1 + len(probes)
            assert rig.agent.recovery.state is State.UNREGISTERED

    run(scenario())


def test_the_probes_first_sign_in_under_an_incident_goes_at_a_point_of_its_own(
    tmp_path, monkeypatch
) -> None:
    """A fleet of unregistered terminals hears its acquirer's incident at one moment: each
    probe's first sign-in under it goes at a random point of `recovery.incident_signin_every`
    (here drawn at half of it), not at once, so their refusals keep coming spread over the
    period instead of in one burst, and none comes again before the period has passed."""
    import random

    monkeypatch.setattr(random, "uniform", lambda low, high: (low + high) / 2)
    sections = {"recovery": {"probe_first": 0.1, "incident_signin_every": 4.0}}

    async def scenario():
        async with gateway_rig(tmp_path, sections=sections) as rig:
            rig.put_tms()
            rig.host.set_status(TID, "cancelled")
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "97"
            recovery = rig.agent.recovery
            assert recovery.state is State.UNREGISTERED

            def sign_ins() -> int:
                return rig.host.state()["requests"].get("0800", 0)

            recovery.incident.open("fleet incident")
            heard = sign_ins()
            await asyncio.sleep(1.0)
            assert sign_ins() == heard  # not at once: at 2 s of the 4 s period
            for _ in range(60):
                if sign_ins() > heard:
                    break
                await asyncio.sleep(0.1)
            assert sign_ins() == heard + 1
            await asyncio.sleep(1.0)
            assert sign_ins() == heard + 1  # the next, a period later

    run(scenario())


def test_header_asking_for_sign_in_gets_one_in_the_background(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            before = rig.agent.journal.last_signin()["at"]
            rig.host.terminals[TID].require_signin = True
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "00"  # the approval stands
            for _ in range(50):
                if rig.agent.journal.last_signin()["at"] > before:
                    break
                await asyncio.sleep(0.05)
            assert rig.agent.journal.last_signin()["at"] > before
            assert not rig.host.terminals[TID].require_signin

    run(scenario())


def test_header_asking_for_a_parameter_download_runs_the_provision_hook(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"tms": {"url": ""}}) as rig:
            asked = recording_hook(tmp_path, "provision")
            rig.host.terminals[TID].asks = 6
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            for _ in range(50):
                if asked.exists() and asked.read_text().strip():
                    break
                await asyncio.sleep(0.05)
            [payload] = [json.loads(line) for line in asked.read_text().splitlines() if line]
            assert payload["reason"].startswith("the host asked for a TMS parameter download (6)")
            assert payload["module_serial"] == "SIM0000000000001"
            events = [e for e in rig.agent.journal.events() if e["kind"] == "host-asks"]
            assert events[0]["what"] == "a TMS parameter download (re-provisioning)"

    run(scenario())


def test_refused_sign_in_at_start_recovers_by_reprovisioning(tmp_path) -> None:
    """The agent starts with a wrong TID: the sign-in itself gets the 97."""

    async def scenario():
        wrong = {"terminal": {"tid": "10000009"}}
        async with gateway_rig(tmp_path, sections=wrong, sign_in=False) as rig:
            rig.put_tms(tid=TID)
            await sign_in_at_start(rig.agent)
            assert remedies(rig.agent.journal) == [("provision", True)]
            assert rig.agent.journal.last_signin()["tid"] == TID
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"

    run(scenario())


def test_tampered_module_escalates_without_trying_remedies(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(
            tmp_path, sign_in=False, sections={"recovery": {"probe_first": 30}}
        ) as rig:
            rig.put_tms()
            rig.host.set_status(TID, "cancelled")
            rig.module_port.simulator.tampered = True
            await sign_in_at_start(rig.agent)
            assert remedies(rig.agent.journal) == []
            assert rig.agent.recovery.state is State.UNREGISTERED
            assert "tampering" in rig.agent.recovery.message.en

    run(scenario())


async def _second_host_without_the_terminal(folder):
    import contextlib

    from agent.sim.host import AcquirerHost
    from agent.sim.host_server import HostServer

    folder.mkdir()
    (folder / "registry.json").write_text(json.dumps({"terminals": []}))
    server = HostServer(AcquirerHost(folder / "registry.json"))

    @contextlib.asynccontextmanager
    async def running():
        address = await server.start()
        try:
            yield f"{address[0]}:{address[1]}", server
        finally:
            await server.close()

    return running()


def _with_hosts(config, primary: str, backup):
    import dataclasses

    from agent.config import parse_endpoint

    host = dataclasses.replace(config.host, primary=parse_endpoint(primary), backup=backup)
    return dataclasses.replace(config, host=host)


def test_the_light_check_signs_in_before_a_purchase_finds_stale_keys(tmp_path) -> None:
    from agent.service.daemon import light_checks
    from agent.sim.module import TEST_TMK
    from agent.wire.working_keys import issue_working_keys

    async def scenario():
        async with gateway_rig(tmp_path, sections={"selftest": {"interval": 0.2}}) as rig:
            checking = asyncio.create_task(light_checks(rig.agent))
            try:
                stale = {"PIK": bytes(range(16)), "MAK": bytes(range(16, 32))}
                field62 = issue_working_keys(TEST_TMK, 2, stale).to_field62()
                await asyncio.to_thread(rig.agent.module.load_working_keys, 0, 2, field62)
                signed = rig.agent.journal.last_signin()["at"]
                for _ in range(50):
                    if rig.agent.journal.last_signin()["at"] > signed:
                        break
                    await asyncio.sleep(0.1)
            finally:
                checking.cancel()
            events = [e for e in rig.agent.journal.events() if e["kind"] == "light-check"]
            assert events[0]["check"] == "keys"
            assert events[0]["result"].startswith("fail: the module's keys are not those")
            assert rig.agent.journal.last_signin()["at"] > signed
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            assert rig.host.state()["mac_failures"] == 0

    run(scenario())


def test_a_purchase_during_the_start_up_repair_waits_for_it(tmp_path) -> None:
    """The configured TID is wrong: the start-up sign-in gets 97 and recovery re-provisions from
    the TMS. A purchase that arrives meanwhile waits, instead of "96 key absent"."""

    async def scenario():
        sections = {"terminal": {"tid": "10000009"}}
        async with gateway_rig(tmp_path, sign_in=False, sections=sections) as rig:
            rig.put_tms()  # the TMS knows the right TID
            starting = asyncio.create_task(sign_in_at_start(rig.agent))
            await asyncio.sleep(0)  # the start-up has begun
            response = await exchange(rig.socket, app_purchase(1000))
            await starting
            assert response.text(39) == "00", response
            assert rig.agent.config.terminal.tid == TID

    run(scenario())


def test_hanging_hooks_never_hold_up_a_recovery(tmp_path) -> None:
    """A signed-in hook and three on-97 hooks that hang for the whole hook timeout: the 97 is
    repaired and the retry approved long before any of them ends (DESIGN.md section 9)."""
    import time

    async def scenario():
        async with gateway_rig(tmp_path, sections={"hooks": {"timeout": 20}}) as rig:
            for event, names in (("signed-in", ["50-hang"]), ("on-97", ["10-a", "20-b", "30-c"])):
                folder = tmp_path / "hooks.d" / event
                folder.mkdir(parents=True, exist_ok=True)
                for name in names:
                    hook = folder / name
                    hook.write_text("#!/bin/sh\nsleep 20\n")
                    hook.chmod(stat.S_IRWXU)
            rig.put_tms()
            rig.host.forget(TID)
            started = time.monotonic()
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            assert time.monotonic() - started < 10  # not one hook timeout, let alone four
            assert len(rig.agent.hooks._tasks) >= 2  # still running, in the background

    run(scenario())


def test_a_97_from_the_backup_after_a_hung_primary_signs_in_there(tmp_path) -> None:
    """The primary hangs while the TMS lists only it; the backup, where the terminal never
    signed in, answers 97. The agent signs in at the backup (not re-provisioning back to the
    hung primary), the sale goes through, and the terminal never becomes unregistered because
    a host did not answer (DESIGN.md section 7)."""
    from agent.config import Endpoint
    from agent.sim.host import AcquirerHost
    from agent.sim.host_server import HostServer
    from tests.integration.test_link_hardening import HangingProxy

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.3) as rig:
            real = rig.config.host.primary
            proxy = HangingProxy(real.port)
            primary = Endpoint("127.0.0.1", await proxy.start())
            # a second host of the same acquirer: it knows the terminal, not its session
            backup_server = HostServer(AcquirerHost(tmp_path / "host-registry.json"))
            backup = Endpoint(*await backup_server.start())
            host = dataclasses.replace(rig.config.host, primary=primary, backup=backup)
            reconfigure(
                rig.agent.settings, rig.agent.link, dataclasses.replace(rig.agent.config, host=host)
            )
            rig.site.provision_in_tms([str(primary)])
            try:
                await rig.agent.sender.sign_in()
                assert rig.agent.sender.signed_in_at == str(primary)
                proxy.hang = True
                answers = []
                for n in range(6):
                    answers.append((await exchange(rig.socket, app_purchase(400 + n))).text(39))
                    assert rig.agent.recovery.state is not State.UNREGISTERED, answers
                    if answers[-1] == "00":
                        break
                assert answers[-1] == "00", answers
                assert rig.agent.sender.signed_in_at == str(backup)
                assert rig.agent.config.host.backup == backup  # not provisioned away
                kinds = [e["kind"] for e in rig.agent.journal.events()]
                assert "recovery.unregistered" not in kinds
            finally:
                await proxy.close()
                await backup_server.close()

    run(scenario())


def test_a_sign_in_that_times_out_never_makes_the_terminal_unregistered(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.3) as rig:
            rig.put_tms()
            rig.host.forget(TID)  # 97 to the sale; then the host stops answering
            rig.server.faults.add("no-answer", count=50, mti="0800")
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "96", response
            assert response.text(63).startswith("AGENT host.no-answer: ")
            assert "did not answer" in response.text(63)
            assert rig.agent.recovery.state is State.REGISTERED
            kinds = [e["kind"] for e in rig.agent.journal.events()]
            assert "recovery.inconclusive" in kinds and "recovery.unregistered" not in kinds

    run(scenario())


async def unregistered_then_reactivated(rig) -> None:
    """The acquirer cancels the terminal (a sale refused 97, the terminal unregistered), then
    reactivates it: only a sign-in tells the agent."""
    rig.put_tms()
    rig.host.set_status(TID, "cancelled")
    assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "97"
    assert rig.agent.recovery.state is State.UNREGISTERED
    rig.host.set_status(TID, "active")


def test_any_approved_sign_in_ends_the_unregistered_state(tmp_path) -> None:
    """DESIGN.md section 7: financial requests are answered locally "until a sign-in
    succeeds": the app's own sign-in (and the host's requirement 3) as much as the probe's."""

    async def scenario():
        async with gateway_rig(tmp_path, sections={"recovery": {"probe_first": 60}}) as rig:
            await unregistered_then_reactivated(rig)
            assert (await exchange(rig.socket, APP_SIGNIN)).text(39) == "00"
            await asyncio.sleep(0)  # told a moment later
            assert rig.agent.recovery.state is State.REGISTERED
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            [again] = [e for e in rig.agent.journal.events()
                       if e["kind"] == "recovery.registered-again"]  # fmt: skip
            assert again["why"] == "a sign-in succeeded"

    run(scenario())


def test_the_apps_sign_in_refused_97_is_recovered_from(tmp_path) -> None:
    """DESIGN.md section 7 starts recovery on "a sign-in refused with such a code": the app's
    too. The repair's sign-in is approved, and the app gets that 0810 (with its STAN, without
    the keys), not the 97 of the first."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add("refused-first", mti="0800")
            response = await exchange(rig.socket, APP_SIGNIN)
            assert (response.mti, response.text(39), response.text(11)) == ("0810", "00", "000321")
            assert 62 not in response and 64 not in response
            assert kinds(rig.agent.journal)[0] == "recovery.refused"
            assert kinds(rig.agent.journal)[-1] == "recovery.recovered"
            assert remedies(rig.agent.journal) == [("sign-in", True)]
            assert rig.agent.recovery.state is State.REGISTERED

    run(scenario())


def test_the_apps_sign_in_refused_by_a_host_that_refuses_the_terminal_unregisters_it(
    tmp_path,
) -> None:
    """A host that refuses every sign-in with 97 (the terminal is not registered there): the
    app's sign-in is the terminal's refusal, as the start-up's is: it becomes unregistered, the
    app is told why, and sales are answered locally."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.host.set_status(TID, "cancelled")
            response = await exchange(rig.socket, APP_SIGNIN)
            assert (response.mti, response.text(39), response.text(11)) == ("0810", "97", "000321")
            assert response.text(63).startswith("AGENT host.97"), response.text(63)
            assert rig.agent.recovery.state is State.UNREGISTERED
            before = purchases_sent(rig)
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "97"
            assert purchases_sent(rig) == before  # held: no host traffic
            # asked again while unregistered: the probe is on it, no second recovery
            refusals = kinds(rig.agent.journal).count("recovery.refused")
            assert (await exchange(rig.socket, APP_SIGNIN)).text(39) == "97"
            assert kinds(rig.agent.journal).count("recovery.refused") == refusals

    run(scenario())


def test_a_sign_in_refused_again_the_same_way_starts_no_second_recovery(tmp_path) -> None:
    """A host that refuses every sign-in with a code not about the terminal (A7, security
    processing failed): the first refused sign-in's recovery is inconclusive (the terminal
    stays registered); the app's next ones, within SAME_REFUSAL_MEMORY, get the refusal
    without a recovery each (its self-check, its hooks, its sign-in, sales held meanwhile)."""
    from agent.sim.host import response_to

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.host._sign_in = lambda message, terminal: response_to(message, "A7")
            for _ in range(3):
                assert (await exchange(rig.socket, APP_SIGNIN)).text(39) == "A7"
            assert kinds(rig.agent.journal).count("recovery.refused") == 1
            assert rig.agent.recovery.state is State.REGISTERED

    run(scenario())


def test_a_sign_in_refused_with_a_host_fault_is_nobodys_refusal_yet(tmp_path) -> None:
    """DESIGN.md section 7: the terminal's refusal is a sign-in refused with a terminal-config
    code. A sign-in answered 96 (the host's own fault) leaves the terminal registered: the app
    is told 96 with why, and sales are not held."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.put_tms()
            rig.host.set_status(TID, "faulty")  # 96 to all, the sign-in too...
            rig.server.faults.add("refused-first", mti="0200")  # ...but a 97 to the purchase
            answer = await exchange(rig.socket, app_purchase(1000))
            assert answer.text(39) == "96"
            assert answer.text(63).startswith("AGENT host.signin-failed: the host refused the ")
            assert rig.agent.recovery.state is State.REGISTERED
            assert "recovery.unregistered" not in kinds(rig.agent.journal)
            rig.host.set_status(TID, "active")
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"

    run(scenario())


def test_a_retry_that_gets_no_answer_is_no_recovery(tmp_path) -> None:
    """A sign-in approved, then the retry times out: a communication failure (its reversal
    queued), not "recovered" in the journal, the counters or the fleet's events."""

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.3) as rig:
            rig.put_tms()
            rig.host.forget(TID)  # the purchase gets 97 (as does the fault's first answer)
            rig.server.faults.add("refused-first", mti="0200")
            rig.server.faults.add("no-answer", mti="0200")  # the retry, after the sign-in
            answer = await exchange(rig.socket, app_purchase(1000))
            assert answer.text(39) == "98", answer
            journal_kinds = kinds(rig.agent.journal)
            assert "recovery.recovered" not in journal_kinds
            assert "recovery.inconclusive" in journal_kinds
            assert rig.agent.recovery.counts["recoveries"] == 0
            assert rig.agent.recovery.state is State.REGISTERED

    run(scenario())


def test_a_technicians_sign_in_stops_the_probe(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"recovery": {"probe_first": 0.5}}) as rig:
            await unregistered_then_reactivated(rig)
            await rig.agent.recovery.sign_in("a technician")  # as `agent signin` asks it
            assert rig.agent.recovery.state is State.REGISTERED
            signins = rig.host.state()["requests"]["0800"]
            await asyncio.sleep(1.5)  # three probe pauses
            assert rig.host.state()["requests"]["0800"] == signins, "the probe signed in again"

    run(scenario())


async def repair_ended(rig) -> None:
    """Once the running recovery has ended (10 s at most)."""
    while rig.agent.recovery.state is State.RECOVERING:
        await asyncio.wait_for(rig.agent.recovery.state_changed(), 10)


def test_a_repair_that_outlasts_the_deadline_answers_the_app_and_goes_on(tmp_path) -> None:
    """DESIGN.md section 7: the retries run "within a total deadline", and a request waits for
    a recovery "within recovery.deadline". A sign-in the host answers after the deadline: the
    app gets 96 at the deadline (not when the repair ends), the sale is not sent again after
    it, and the repair goes on to its end: registered, and the next sale approved."""
    import time

    async def scenario():
        sections = {"recovery": {"deadline": 1.0}}
        async with gateway_rig(tmp_path, response_timeout=5.0, sections=sections) as rig:
            rig.put_tms()
            rig.host.forget(TID)
            rig.server.faults.add("slow", delay=2.5, mti="0800")
            started = time.monotonic()
            answer = await exchange(rig.socket, app_purchase(1000))
            waited = time.monotonic() - started
            assert answer.text(39) == "96", answer
            assert answer.text(63).startswith("AGENT recovery.still-running: ")
            assert waited < 2.0, waited  # the deadline, not the sign-in's 2.5 s
            assert rig.agent.recovery.state is State.RECOVERING
            await repair_ended(rig)
            assert rig.agent.recovery.state is State.REGISTERED
            assert kinds(rig.agent.journal)[-2:] == ["recovery.remedy", "recovery.recovered"]
            assert "recovery.deadline" in kinds(rig.agent.journal)
            assert purchases_sent(rig) == 1  # answered 96: never sent again
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"

    run(scenario())


def test_a_retry_on_its_way_at_the_deadline_is_waited_for(tmp_path) -> None:
    """The sign-in is quick, the retry's answer comes after the deadline: the app waits for it
    (it may be an approval) and gets it; nothing is reversed."""

    async def scenario():
        sections = {"recovery": {"deadline": 1.0}}
        async with gateway_rig(tmp_path, response_timeout=5.0, sections=sections) as rig:
            rig.put_tms()
            rig.host.forget(TID)  # the first try gets 97
            rig.server.faults.add("refused-first", mti="0200")
            rig.server.faults.add("slow", delay=1.5, mti="0200")  # the retry's approval
            answer = await exchange(rig.socket, app_purchase(1000))
            assert answer.text(39) == "00", answer
            assert purchases_sent(rig) == 2
            assert "recovery.deadline" not in kinds(rig.agent.journal)
            assert kinds(rig.agent.journal)[-1] == "recovery.recovered"
            assert rig.agent.journal.queued_reversals() == []

    run(scenario())


def test_a_request_waiting_for_anothers_repair_is_answered_at_the_deadline(tmp_path) -> None:
    """A second sale while the first one's recovery runs (its self-check waits for a slow echo)
    waits for that recovery within recovery.deadline, then is answered 96 unsent: not for as
    long as the repair takes, and not sent under keys about to change; the recovery then ends,
    and the next sale is approved."""
    import time

    async def scenario():
        sections = {"recovery": {"deadline": 1.0}}
        async with gateway_rig(tmp_path, response_timeout=5.0, sections=sections) as rig:
            rig.put_tms()
            rig.host.forget(TID)
            rig.server.faults.add("slow", delay=3.0, mti="0820")  # the self-check's echo
            refused_one = app_purchase(1000)
            first = asyncio.create_task(exchange(rig.socket, refused_one))
            while rig.agent.recovery.state is not State.RECOVERING:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            second = await exchange(rig.socket, app_purchase(2000))
            assert second.text(39) == "96", second
            assert second.text(63).startswith("AGENT recovery.still-running: ")
            assert time.monotonic() - started < 1.6  # the deadline, not the repair's 3 s
            assert (await first).text(39) == "96"
            await repair_ended(rig)
            assert rig.agent.recovery.state is State.REGISTERED
            assert purchases_sent(rig) == 1  # the first, refused; neither sent again
            assert (await exchange(rig.socket, app_purchase(3000))).text(39) == "00"
            # told to try again in a moment, the app does: sent, not the first try's 97 again
            assert (await exchange(rig.socket, refused_one)).text(39) == "00"

    run(scenario())


def test_a_stop_while_a_retrys_approval_is_recorded_reverses_it(tmp_path) -> None:
    """The agent stops (the recovery closed) while the retry's approval is on its way to the
    journal: the app never gets it, so the approval the journal records is reversed, not left
    charged (a row left pending would be reversed at the next start)."""
    import threading
    import time

    async def scenario():
        sections = {"recovery": {"deadline": 1.0}}
        async with gateway_rig(tmp_path, response_timeout=5.0, sections=sections) as rig:
            rig.put_tms()
            rig.host.forget(TID)
            rig.server.faults.add("refused-first", mti="0200")
            rig.server.faults.add("slow", delay=1.5, mti="0200")  # the retry's approval
            sender = rig.agent.sender
            close_checked = sender._close_checked
            recording = threading.Event()

            def slow_disk(*args):
                if args[2].frame.message.text(39) == "00":
                    recording.set()
                    time.sleep(0.5)
                return close_checked(*args)

            sender._close_checked = slow_disk
            app = asyncio.create_task(exchange(rig.socket, app_purchase(1000)))
            while not recording.is_set():
                await asyncio.sleep(0.01)
            await rig.agent.recovery.close()  # what the stop does
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await asyncio.wait_for(app, 3)  # no answer: the connection ends
            for _ in range(100):
                if rig.agent.journal.queued_reversals():
                    break
                await asyncio.sleep(0.05)
            [reversal] = rig.agent.journal.queued_reversals()
            assert reversal.reason == "06"

    run(scenario())
