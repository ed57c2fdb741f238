"""The STAN map of wrap mode (DESIGN.md section 10) over real sockets: the app names earlier
requests by its own STANs, the host knows the agent's; a repeated request is answered again, not
charged again; a reversal the agent already made is not sent twice."""

import asyncio

from agent.wire.frame import Layout, decode_frame
from agent.wire.message import Message
from tests.integration.gateway_rig import (
    app_purchase,
    exchange,
    gateway_rig,
    reversal_of,
    send_and_leave,
    void_of,
)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_a_void_by_the_apps_receipt_number_reaches_its_original(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            assert (await exchange(rig.socket, app_purchase(1234, app_stan=345))).text(39) == "00"
            response = await exchange(rig.socket, void_of(345, 1234, new_stan=346))
            assert response.text(39) == "00", response
            assert response.text(11) == "000346"
            purchases = rig.host.state()["purchases"]
            [original] = [p for p in purchases.values() if p["processing"] == "000000"]
            assert original.get("voided"), "the host found the original by the agent's STAN"
            # a void of a receipt number the agent never sent goes out as it is: the host says 25
            assert (await exchange(rig.socket, void_of(999, 1234, new_stan=347))).text(39) == "25"

    run(scenario())


def test_the_apps_reversal_by_its_stan_reverses_the_purchase(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            purchase = app_purchase(1500, app_stan=400)
            assert (await exchange(rig.socket, purchase)).text(39) == "00"
            response = await exchange(rig.socket, reversal_of(purchase))
            assert (response.mti, response.text(39), response.text(11)) == ("0410", "00", "000400")
            [charge] = rig.host.state()["purchases"].values()
            assert charge["reversed"]
            assert rig.host.state()["mac_failures"] == 0

    run(scenario())


def test_the_apps_reversal_that_copies_field_59_goes_without_it(tmp_path) -> None:
    """An app that builds its 0400 from its purchase copies 59 (A2, and under SM4 the A1 PIN
    block): a reversal carries no 59 (DESIGN.md section 4); the host simulator refuses one
    that does with 30."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            purchase = app_purchase(1500, app_stan=401)
            assert (await exchange(rig.socket, purchase)).text(39) == "00"
            reversal = reversal_of(purchase)
            reversal.fields[59] = bytes.fromhex("4132") + b"010" + b"0" * 10  # A2 as copied
            reversal.fields = dict(sorted(reversal.fields.items()))
            response = await exchange(rig.socket, reversal)
            assert response.text(39) == "00", response
            [charge] = rig.host.state()["purchases"].values()
            assert charge["reversed"]

    run(scenario())


def test_the_apps_reversal_of_what_the_agent_reversed_is_not_sent_again(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.3) as rig:
            rig.server.faults.add("no-answer")
            purchase = app_purchase(1600, app_stan=410)
            assert (await exchange(rig.socket, purchase)).text(39) == "98"
            assert await rig.agent.reversals.send() == 1  # the agent's own reversal (98)
            reversals = rig.host.state()["reversals"]
            response = await exchange(rig.socket, reversal_of(purchase))
            assert response.text(39) == "00"
            assert response.text(63) == "AGENT request.original-reversed: reversed by the agent"
            assert rig.host.state()["reversals"] == reversals, "not sent twice"

    run(scenario())


def test_a_reversal_of_nothing_the_agent_sent_is_answered_25_locally(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            response = await exchange(rig.socket, reversal_of(app_purchase(1700, app_stan=420)))
            assert response.text(39) == "25"
            assert rig.host.state()["requests"].get("0400", 0) == 0

    run(scenario())


def test_a_repeated_purchase_gets_the_first_answer_and_is_charged_once(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            purchase = app_purchase(1800, app_stan=430)
            first = await exchange(rig.socket, purchase)
            again = await exchange(rig.socket, purchase)  # the app's own retry
            assert first.text(39) == again.text(39) == "00"
            assert (again.text(37), again.text(38)) == (first.text(37), first.text(38))
            assert again.text(2) == first.text(2)  # the card number is the request's
            state = rig.host.state()
            assert len(state["purchases"]) == 1 and state["duplicates"] == 0
            assert state["requests"]["0200"] == 1
            # another amount under the same STAN is another request
            other = app_purchase(1900, app_stan=430)
            assert (await exchange(rig.socket, other)).text(39) == "00"
            assert rig.host.state()["requests"]["0200"] == 2

    run(scenario())


def test_a_repetition_outside_the_replay_window_is_a_new_request(tmp_path) -> None:
    async def scenario():
        sections = {"gateway": {"replay_window": 0}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            purchase = app_purchase(2000, app_stan=440)
            assert (await exchange(rig.socket, purchase)).text(39) == "00"
            await asyncio.sleep(0.05)
            await exchange(rig.socket, purchase)
            assert rig.host.state()["requests"]["0200"] == 2

    run(scenario())


def replay_lookups(journal) -> list[str]:
    """The app STANs the journal is asked to replay from now on, in order."""
    looked: list[str] = []
    lookup = journal.replay

    def counted(app_stan: str, key: str, window: float):
        looked.append(app_stan)
        return lookup(app_stan, key, window)

    journal.replay = counted
    return looked


def test_only_a_stan_recorded_lately_is_looked_up_and_a_repetition_is_still_replayed(
    tmp_path,
) -> None:
    """The agent knows every app STAN recorded within the replay window (those of before a
    restart read from the journal at start): a new STAN needs no look into the journal (a
    thread hop on every sale), a repeated one is still answered from the journal, not charged
    again; once out of the window it is a new request."""

    async def scenario():
        sections = {"gateway": {"replay_window": 0.5}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            looked = replay_lookups(rig.agent.journal)
            purchase = app_purchase(2400, app_stan=471)
            assert (await exchange(rig.socket, purchase)).text(39) == "00"
            assert looked == []  # a new STAN: no look
            again = await exchange(rig.socket, purchase)
            assert again.text(39) == "00" and looked == ["000471"]
            assert rig.host.state()["requests"]["0200"] == 1  # not charged twice
            await asyncio.sleep(0.6)
            await exchange(rig.socket, purchase)  # out of the window: a new request
            assert rig.host.state()["requests"]["0200"] == 2

    run(scenario())


def test_after_a_restart_the_stans_of_before_are_still_looked_up(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            purchase = app_purchase(2500, app_stan=480)
            assert (await exchange(rig.socket, purchase)).text(39) == "00"
        async with gateway_rig(tmp_path) as rig:  # the agent again, on the same journal
            looked = replay_lookups(rig.agent.journal)
            again = await exchange(rig.socket, purchase)
            assert again.text(39) == "00" and looked == ["000480"]  # replayed, not charged
            assert rig.host.state()["requests"].get("0200", 0) == 0
            assert (await exchange(rig.socket, app_purchase(2600, app_stan=481))).text(39) == "00"
            assert looked == ["000480"]  # a STAN new to the journal too: no look

    run(scenario())


def test_a_repetition_while_the_first_is_in_flight_waits_for_its_answer(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add("late", delay=0.3)
            purchase = app_purchase(2200, app_stan=460)
            first, again = await asyncio.gather(
                exchange(rig.socket, purchase), exchange(rig.socket, purchase)
            )
            assert first.text(39) == again.text(39) == "00"
            assert first.text(37) == again.text(37)
            assert rig.host.state()["requests"]["0200"] == 1

    run(scenario())


def test_the_apps_reversal_of_a_sale_of_the_batch_before_is_translated_there(tmp_path) -> None:
    """DESIGN.md section 10: a reference is translated "within the batch the reference names".
    A sale in batch 1, then a sign-in brings batch 2: the app's 0400 for that sale (60.2 = 1)
    finds it in batch 1, goes to the host under its wire STAN, and the sale is reversed (not
    answered 25, which would make the app drop its reversal while the host keeps the charge)."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            sale = app_purchase(1000, app_stan=950)
            assert (await exchange(rig.socket, sale)).text(39) == "00"
            rig.host.batch = 2
            await rig.agent.sender.sign_in()
            assert rig.agent.journal.batch == 2
            reversal = reversal_of(sale)
            reversal.fields[60] = "22000001"  # the app's own record of the sale's batch
            answer = await exchange(rig.socket, reversal)
            assert (answer.text(39), answer.text(11)) == ("00", "000950")
            [entry] = rig.host.state()["purchases"].values()
            assert entry["reversed"]

    run(scenario())


def test_the_agents_reversal_of_a_void_names_the_sale_as_the_void_did(tmp_path) -> None:
    """A void approved whose answer the app could not take is reversed (06): the 0400 names
    the sale as the void did (61, in wire numbers), so a host that matches a void's reversal by
    it finds the void; the sale stands again."""
    seen: list[Message] = []

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            handle = rig.host.handle

            def recording(frame: bytes) -> bytes | None:
                seen.append(decode_frame(frame, Layout.TPDU).message)
                return handle(frame)

            rig.host.handle = recording
            assert (await exchange(rig.socket, app_purchase(1160, app_stan=512))).text(39) == "00"
            await send_and_leave(rig.socket, void_of(512, 1160, 612))
            for _ in range(100):
                if rig.agent.journal.queued_reversals():
                    break
                await asyncio.sleep(0.05)
            assert await rig.agent.reversals.send() == 1
            void = next(m for m in seen if m.mti == "0200" and m.text(3) == "200000")
            reversal = next(m for m in seen if m.mti == "0400")
            assert reversal.text(61) == void.text(61) and reversal.text(11) == void.text(11)
            sale = next(p for p in rig.host.state()["purchases"].values() if "voids" not in p)
            assert not sale.get("voided")  # the void undone: the sale stands

    run(scenario())
