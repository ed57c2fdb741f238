"""Every row of DESIGN.md section 15 over real sockets: the class decides the MAC (verified by the
host simulator, which refuses a MAC-less request of an MTI that needs one), the reversal on a
timeout, and the local answer while the terminal is unregistered. What fits no row is answered 30
and never reaches the host."""

import asyncio
import contextlib
import json

import pytest

from agent.recovery.policy import State
from agent.transaction.classes import CLASSES, classify
from agent.transaction.reversals import ReversalPending
from agent.wire.frame import with_length
from agent.wire.message import Message, decode_message, encode_message
from agent.wire.profile import load_profile
from tests.integration.gateway_rig import CARD, TID, exchange, gateway_rig

# name -> (MTI, processing code, 25, 60.1) of an app request of that class
ROWS = {
    "balance inquiry": ("0200", "310000", "00", "01"),
    "purchase": ("0200", "000000", "00", "22"),
    "void": ("0200", "200000", "00", "23"),
    "refund": ("0220", "200000", "00", "25"),
    "pre-authorisation": ("0100", "030000", "06", "10"),
    "pre-authorisation void": ("0100", "200000", "06", "11"),
    "completion request": ("0200", "000000", "06", "20"),
    "completion void": ("0200", "200000", "06", "21"),
    "completion advice, offline, adjust": ("0220", "000000", "06", "24"),
    "offline (EC) upload": ("0200", "000000", "00", "36"),
}


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def app_request(name: str, app_stan: int = 901, amount_fen: int = 1000) -> Message:
    mti, processing, condition, message_type = ROWS[name]
    return Message(
        mti,
        {
            2: CARD.pan, 3: processing, 4: f"{amount_fen:012d}", 11: f"{app_stan:06d}",
            14: CARD.expiry, 22: "021", 25: condition, 35: CARD.track2, 49: "156",
            60: message_type + "000000",
        },
    )  # fmt: skip


def cls(name: str):
    return next(c for c in CLASSES if c.name == name)


def test_the_table_is_design_section_15() -> None:
    for name, (mti, processing, condition, message_type) in ROWS.items():
        found = classify(app_request(name))
        assert found is not None and found.name == name
        assert mti in found.mti and processing[:2] in found.processing
        assert condition in found.condition and message_type in found.message_type
    reversible = {c.name for c in CLASSES if c.reversible}
    assert reversible == {"purchase", "void", "pre-authorisation", "pre-authorisation void",
                          "completion request", "completion void"}  # fmt: skip
    held = {c.name for c in CLASSES if c.held}
    assert held == set(ROWS)


@pytest.mark.parametrize("name", list(ROWS))
def test_each_class_is_maced_and_verified_by_the_host(tmp_path, name: str) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            response = await exchange(rig.socket, app_request(name, app_stan=345))
            assert response.text(39) == "00", response
            assert response.text(11) == "000345"
            state = rig.host.state()
            assert (state["missing_macs"], state["mac_failures"]) == (0, 0)
            [entry] = state["purchases"].values()
            assert (entry["mti"], entry["processing"]) == ROWS[name][:2]

    run(scenario())


@pytest.mark.parametrize("name", list(ROWS))
def test_a_timeout_is_reversed_where_the_class_is_reversible(tmp_path, name: str) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.3) as rig:
            rig.server.faults.add("no-answer")
            response = await exchange(rig.socket, app_request(name))
            assert response.text(39) == "98"
            queued = rig.agent.journal.queued_reversals()
            if not cls(name).reversible:
                assert queued == [], "a non-reversible request is not reversed"
                return
            assert [r.reason for r in queued] == ["98"]
            assert await rig.agent.reversals.send() == 1
            [entry] = rig.host.state()["purchases"].values()
            assert entry["reversed"], "the host's approval must be reversed"

    run(scenario())


@pytest.mark.parametrize("fault", ["wrong-mac", "garbage"])
@pytest.mark.parametrize("name", list(ROWS))
def test_a_hostile_answer_in_every_class(tmp_path, name: str, fault: str) -> None:
    """An approval whose MAC is wrong is not passed on (A0), garbage is an unknown outcome (98);
    either way the app has its answer, and a reversible request is reversed."""

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.5) as rig:
            rig.server.faults.add(fault)
            response = await exchange(rig.socket, app_request(name, app_stan=346))
            expected = {"wrong-mac": "A0", "garbage": "98"}[fault]
            assert (response.text(39), response.text(11)) == (expected, "000346")
            reasons = [r.reason for r in rig.agent.journal.queued_reversals()]
            assert reasons == ([expected] if cls(name).reversible else [])
            # the terminal goes on: the next request of the class is approved
            assert (await exchange(rig.socket, app_request(name, app_stan=347))).text(39) == "00"

    run(scenario())


NEVER_REVERSED = ["refund", "completion advice, offline, adjust", "offline (EC) upload"]


@pytest.mark.parametrize("fault", ["no-answer", "wrong-mac", "garbage"])
@pytest.mark.parametrize("name", NEVER_REVERSED)
def test_a_repetition_of_an_unanswered_money_request_goes_under_its_first_stan(
    tmp_path, name: str, fault: str
) -> None:
    """DESIGN.md section 10: a repetition "is not sent twice". A refund, an advice or an EC
    upload moves money and is never reversed: when the host may have taken it but the app got
    no answer of the host's (98, A0), the app's repetition goes again under the first try's
    STAN, so the host tells the repeat (this one answers 94) instead of booking it twice. A
    request with another app STAN is a new one."""

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.5) as rig:
            rig.server.faults.add(fault)
            first = await exchange(rig.socket, app_request(name, app_stan=555))
            assert first.text(39) in ("98", "A0"), first
            again = await exchange(rig.socket, app_request(name, app_stan=555))
            assert (again.text(39), again.text(11)) == ("94", "000555")
            assert len(rig.host.state()["purchases"]) == 1  # booked once
            mti = ROWS[name][0]
            stans = [t["stan"] for t in rig.agent.journal.transactions() if t["mti"] == mti]
            assert len(stans) == 2 and stans[0] == stans[1]  # the repeat, under the first's
            other = await exchange(rig.socket, app_request(name, app_stan=556))
            assert other.text(39) == "00"
            assert len(rig.host.state()["purchases"]) == 2

    run(scenario())


@pytest.mark.parametrize("name", NEVER_REVERSED)
def test_a_retry_after_a_97_of_an_unreversed_class_goes_under_the_refused_tries_stan(
    tmp_path, name: str
) -> None:
    """A 97 without a MAC reaches the agent ahead of the host's approval (a stray, or a
    forger): recovery signs in and sends the request again. A refund, an advice or an EC
    upload is never reversed, so its retry goes under the STAN of the try refused, and the
    host, which booked that one, tells the repeat (94) instead of booking it twice. And the
    app's repetition after a 98 refused 97 (the host lost its session meanwhile) likewise."""

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.5) as rig:
            rig.put_tms()
            rig.server.faults.add("refused-first")
            await exchange(rig.socket, app_request(name, app_stan=557))
            await asyncio.sleep(0.5)  # the host's own answer, late
            assert len(rig.host.state()["purchases"]) == 1  # booked once

            rig.server.faults.add("no-answer")  # the host books it, its answer never comes
            first = await exchange(rig.socket, app_request(name, app_stan=558))
            assert first.text(39) == "98"
            rig.host.forget(TID)  # the repetition is refused 97 until a sign-in
            again = await exchange(rig.socket, app_request(name, app_stan=558))
            assert again.text(11) == "000558"
            assert len(rig.host.state()["purchases"]) == 2  # each of the two once

    run(scenario())


def test_a_refund_retried_after_the_reversal_before_it_was_refused_takes_a_stan_of_its_own(
    tmp_path,
) -> None:
    """A sale's answer is lost (its reversal queued), then the host loses its session: the
    reversal that goes before the refund is refused 97, and the refund with it. After the
    repair the refund goes under a STAN of its own, not the reversed sale's (the refused
    answer was the reversal's): the host's ledger keeps both, the sale reversed."""

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.5) as rig:
            rig.put_tms()
            rig.server.faults.add("no-answer", mti="0200")  # booked, the answer lost: 98
            assert (await exchange(rig.socket, app_request("purchase", 564))).text(39) == "98"
            rig.host.forget(TID)
            refund = await exchange(rig.socket, app_request("refund", 565, amount_fen=1234))
            assert refund.text(39) == "00", refund.get(63)
            journal = rig.agent.journal
            stans = {t["mti"]: t["stan"] for t in journal.transactions() if t["mti"] != "0400"}
            assert stans["0220"] != stans["0200"]
            booked = rig.host.state()["purchases"].values()
            assert sorted(p["processing"] for p in booked) == ["000000", "200000"]

    run(scenario())


@pytest.mark.parametrize("name", NEVER_REVERSED)
def test_a_repetition_after_a_retry_without_answer_is_not_told_the_first_tries_97(
    tmp_path, name: str
) -> None:
    """The host lost its session: the first try is refused 97, recovery's retry is booked but
    its answer lost (98). The app's repetition goes to the host under the retry's STAN (94:
    booked once), not answered from the journal with the first try's 97, a refusal the repair
    has made untrue."""

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.5) as rig:
            rig.put_tms()
            rig.host.forget(TID)  # the first try: 97
            rig.server.faults.add("late", delay=0.0, mti=ROWS[name][0])  # answered as is
            rig.server.faults.add("no-answer", mti=ROWS[name][0])  # the retry's
            first = await exchange(rig.socket, app_request(name, app_stan=559))
            assert first.text(39) == "98"
            again = await exchange(rig.socket, app_request(name, app_stan=559))
            assert again.text(39) == "94", again.get(63)
            assert len(rig.host.state()["purchases"]) == 1

    run(scenario())


def test_kinds_the_merchant_is_not_enabled_for_leave_the_terminal_registered(tmp_path) -> None:
    """The host answers 58 (not permitted on this terminal) to refunds and pre-authorisations
    and approves sales: the first refund and pre-authorisation of a quiet morning are refused
    as requests; the terminal stays registered and the next sale goes to the host, approved.
    "Every message class is refused" (DESIGN.md section 7) takes the purchase among them."""

    async def scenario():
        async with gateway_rig(tmp_path, sections={"recovery": {"probe_first": 30}}) as rig:
            rig.put_tms()
            rig.host.terminals[TID].not_permitted = ("20", "03")  # processing codes refused
            for stan, name in ((561, "refund"), (562, "pre-authorisation")):
                assert (await exchange(rig.socket, app_request(name, stan))).text(39) == "58"
            assert rig.agent.recovery.state is State.REGISTERED
            assert (await exchange(rig.socket, app_request("purchase", 563))).text(39) == "00"

    run(scenario())


def test_held_classes_are_answered_locally_while_unregistered(tmp_path) -> None:
    async def scenario():
        sections = {"recovery": {"probe_first": 30}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            rig.put_tms()
            rig.host.set_status(TID, "cancelled")
            assert (await exchange(rig.socket, app_request("purchase"))).text(39) == "97"
            assert rig.agent.recovery.state is State.UNREGISTERED
            before = dict(rig.host.state()["requests"])
            for number, name in enumerate(ROWS):
                response = await exchange(rig.socket, app_request(name, app_stan=700 + number))
                assert response.text(39) == "97", name
                assert response.text(63).startswith(
                    "AGENT host.97-after-signin: terminal not registered"
                )
            assert rig.host.state()["requests"] == before, "nothing held reached the host"
            # what is not held still goes: an echo test from the app
            echo = Message("0820", {11: "000777", 60: "00000000301"})
            await exchange(rig.socket, echo)  # (its 97 starts a recovery, with an echo of its own)
            assert rig.host.state()["requests"].get("0820", 0) > before.get("0820", 0)

    run(scenario())


def test_settlement_batch_upload_and_script_result(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            settlement = Message("0500", {11: "000010", 48: "0" * 62, 49: "156", 60: "00000000201"})
            assert (await exchange(rig.socket, settlement)).text(39) == "00"
            # a batch upload names the uploaded transaction by the app's STAN: translated
            assert (await exchange(rig.socket, app_request("purchase", app_stan=11))).text(
                39
            ) == "00"
            upload = Message("0320", {11: "000011", 60: "00000000201", 64: bytes(8)})
            assert (await exchange(rig.socket, upload)).text(39) == "00"
            ended = Message("0320", {11: "000013", 60: "00000000202"})  # the batch balanced
            assert (await exchange(rig.socket, ended)).text(39) == "00"
            unknown = Message("0320", {11: "000099", 60: "00000000201"})
            assert (await exchange(rig.socket, unknown)).text(39) == "25"  # never sent
            script = Message("0620", {3: "000000", 11: "000012", 55: bytes.fromhex("9F3602000A"),
                                      60: "00000000"})  # fmt: skip
            assert (await exchange(rig.socket, script)).text(39) == "00"
            # 60.2 is the current batch, as for every request but a reversal (section 10)
            [sent] = [t for t in rig.agent.journal.transactions() if t["mti"] == "0620"]
            batch = f"{rig.agent.journal.batch:06d}"
            assert batch != "000000" and json.loads(sent["request"])["fields"]["60"][2:8] == batch
            state = rig.host.state()
            assert (state["missing_macs"], state["mac_failures"]) == (0, 0)
            assert state["requests"]["0500"] == 1 and state["requests"]["0320"] == 2

    run(scenario())


@pytest.mark.parametrize(
    "request_",
    [
        Message("0500", {11: "000010", 48: "0" * 62, 49: "156", 60: "00000000201"}),
        Message("0320", {11: "000013", 60: "00000000202"}),
    ],
    ids=["settlement", "batch upload end"],
)
def test_a_queued_reversal_goes_to_the_host_before_a_settlement_or_batch_upload(
    tmp_path, request_: Message
) -> None:
    """A settlement counts the batch: a sale the app was told failed (98, its reversal queued)
    must be reversed at the host first, not settled and then reversed into a closed batch."""

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.3) as rig:
            rig.server.faults.add("no-answer")
            assert (await exchange(rig.socket, app_request("purchase"))).text(39) == "98"
            assert len(rig.agent.journal.queued_reversals()) == 1
            assert "0400" not in rig.host.state()["requests"]  # nothing sends it meanwhile
            assert (await exchange(rig.socket, request_)).text(39) == "00"
            assert rig.agent.journal.queued_reversals() == []  # sent before it
            assert rig.host.state()["requests"]["0400"] == 1

    run(scenario())


def test_a_reversal_that_may_never_close_does_not_lock_settling_out(tmp_path) -> None:
    """A reversal past reversal.attempts (one the host may never close: a 97 under a TID
    re-provisioned since) holds neither sales nor a settlement up: the terminal is never locked
    out of settling by its own queue; the fleet hears of the stuck reversal, a person sees to
    it (the fresh ones go first, test above)."""
    settlement = Message("0500", {11: "000010", 48: "0" * 62, 49: "156", 60: "00000000201"})

    async def scenario():
        sections = {"reversal": {"attempts": 1}}
        async with gateway_rig(tmp_path, response_timeout=0.3, sections=sections) as rig:
            rig.server.faults.add("no-answer")
            assert (await exchange(rig.socket, app_request("purchase"))).text(39) == "98"
            rig.server.faults.add("no-answer")  # its one try: stuck from now on
            with contextlib.suppress(ReversalPending):
                await rig.agent.reversals.send()
            [stuck] = rig.agent.journal.queued_reversals()
            assert stuck.attempts == 1
            assert (await exchange(rig.socket, settlement)).text(39) == "00"

    run(scenario())


@pytest.mark.parametrize(
    "message",
    [
        Message("9999", {11: "000001"}),
        Message("0210", {11: "000002", 39: "00"}),
        Message("0110", {11: "000003", 39: "00"}),
        Message("0200", {3: "990000", 11: "000004", 25: "00", 60: "22000000"}),
        Message("0200", {3: "000000", 11: "000005", 25: "00"}),  # no 60: no message type
        Message("0100", {3: "000000", 11: "000006", 25: "06", 60: "10000000"}),
        Message("0500", {11: "000007", 60: "00000000202"}),  # 202 ends a batch upload
        Message("0320", {11: "000008", 60: "00000000209"}),
    ],
    ids=[
        "9999",
        "0210",
        "0110",
        "processing 99",
        "no 60.1",
        "0100 of a purchase",
        "settlement 202",
        "batch upload 209",
    ],
)
def test_what_fits_no_row_is_answered_30_and_never_sent(tmp_path, message: Message) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            before = dict(rig.host.state()["requests"])
            response = await exchange(rig.socket, message)
            assert response.text(39) == "30"
            assert response.text(11) == message.text(11)
            assert response.text(63).startswith("AGENT request.unclassified: MTI ")
            assert "fits no message class" in response.text(63)
            assert rig.host.state()["requests"] == before
            [event] = [e for e in rig.agent.journal.events() if e["kind"] == "local-answer"]
            assert event["code"] == "30" and event["finding"] == "request.unclassified"

    run(scenario())


def test_the_agents_reason_fits_the_apps_profile(tmp_path) -> None:
    """DESIGN.md section 4: a local answer's reason is clipped to field 63's maximum, which an
    acquirer's profile may set below the CUP 163: the app still gets the agent's code (30 here,
    not a 96 for an answer that did not encode), readable under its own profile."""
    profile_file = tmp_path / "acquirer.toml"
    profile_file.write_text("[fields.63]\nmax = 60\n")
    profile = load_profile(profile_file)

    async def scenario():
        async with gateway_rig(tmp_path, sections={"wire": {"profile": str(profile_file)}}) as rig:
            reader, writer = await asyncio.open_unix_connection(str(rig.socket))
            unclassified = Message("0600", {3: "990000", 11: "000042", 41: TID})
            writer.write(with_length(encode_message(unclassified, profile)))
            await writer.drain()
            length = int.from_bytes(await reader.readexactly(2), "big")
            answer = decode_message(await reader.readexactly(length), profile)
            writer.close()
            assert answer.text(39) == "30"
            assert answer.text(63).startswith("AGENT request.unclassified: ")
            assert len(answer.text(63)) == 60

    run(scenario())
