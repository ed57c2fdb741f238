"""Money under a hostile field (DESIGN.md sections 8 and 10), each case one the red team found:
the app is never told approved for a sale that is reversed, nothing is charged twice, and an
answer nobody waited for moves money only when it is the host's. The host simulator keeps the
ledger every assertion is made against; the app talks over the real Unix socket."""

import asyncio

from agent.journal import JournalError
from agent.wire.message import Message
from tests.integration.gateway_rig import (
    app_purchase,
    exchange,
    gateway_rig,
    reversal_of,
    send_and_leave,
    void_of,
)

OTHER_PAN = "6222021234567890128"


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


async def until(condition, seconds: float, what: str) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} within {seconds} s")


async def settle_reversals(rig) -> None:
    """Send what the journal queued until the host has closed it all."""
    for _ in range(50):
        if not rig.agent.journal.has_queued_reversals:
            return
        await rig.agent.reversals.send()
    raise AssertionError("reversals still queued")


def charge(rig, rrn: str) -> dict:
    """The host's ledger entry of the purchase it answered with retrieval reference ``rrn``."""
    [found] = [p for p in rig.host.state()["purchases"].values() if p.get("rrn") == rrn]
    return found


def assert_told_approved_is_live(rig, answers: list[Message]) -> None:
    """Every approval the app was given is live at the host, exactly once."""
    for answer in answers:
        if answer.text(39) == "00":
            assert not charge(rig, answer.text(37))["reversed"], answer


def with_card(message: Message, pan: str) -> Message:
    other = Message(message.mti, dict(message.fields))
    other.fields[2] = pan
    other.fields[35] = pan + "=28121010000000000"
    return other


# ------------------------------------------------------------------------- what is replayed


def test_a_repeat_of_an_undelivered_and_reversed_sale_is_not_answered_approved(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add("late", delay=0.2)
            purchase = app_purchase(1000, app_stan=501)
            await send_and_leave(rig.socket, purchase)
            await until(lambda: rig.agent.journal.has_queued_reversals, 5, "reversal 06 queued")
            await settle_reversals(rig)
            again = await exchange(rig.socket, purchase)  # the app comes back and repeats
            assert_told_approved_is_live(rig, [again])
            assert rig.host.state()["requests"]["0200"] == 2, "the repeat is a new request"

    run(scenario())


def test_a_repeat_after_the_apps_own_reversal_is_not_answered_approved(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            purchase = app_purchase(1100, app_stan=502)
            first = await exchange(rig.socket, purchase)
            assert (await exchange(rig.socket, reversal_of(purchase))).text(39) == "00"
            assert charge(rig, first.text(37))["reversed"]
            again = await exchange(rig.socket, purchase)
            assert_told_approved_is_live(rig, [again])

    run(scenario())


def test_the_apps_reversal_of_a_sale_in_flight_waits_for_its_answer(tmp_path) -> None:
    """The app gives up on a slow sale and sends its 0400 on another connection: the 0400 waits
    until the sale is answered (section 10: the two are serialised), so the app never hears
    approved after its own reversal, and a repetition of the sale is not answered from it."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add("late", delay=0.5)
            purchase = app_purchase(1150, app_stan=511)
            sale = asyncio.create_task(exchange(rig.socket, purchase))
            await asyncio.sleep(0.1)  # the sale is at the host
            reversal = asyncio.create_task(exchange(rig.socket, reversal_of(purchase)))
            first = await sale
            assert first.text(39) == "00" and not reversal.done()
            assert (await reversal).text(39) == "00"
            assert charge(rig, first.text(37))["reversed"]
            again = await exchange(rig.socket, purchase)
            assert_told_approved_is_live(rig, [again])
            assert rig.host.state()["requests"]["0200"] == 2, "the repeat is a new request"

    run(scenario())


def test_a_void_approved_while_its_sale_is_in_flight_is_not_undone_by_a_repeat(
    tmp_path,
) -> None:
    """The void overtakes its sale at the agent (not at the host): once approved, the sale's
    approval that arrives afterwards is not kept for a repetition."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            purchase = app_purchase(1160, app_stan=512)
            rig.server.faults.add("slow", delay=0.5)  # this answer comes after the next one's
            sale = asyncio.create_task(exchange(rig.socket, purchase))
            await asyncio.sleep(0.1)  # the sale is at the host, its answer held there
            void = await exchange(rig.socket, void_of(512, 1160, 612))
            first = await sale
            assert (first.text(39), void.text(39)) == ("00", "00")
            again = await exchange(rig.socket, purchase)
            assert again.text(37) != first.text(37), "the voided approval was replayed"

    run(scenario())


def test_a_repeat_is_not_sent_when_the_journal_cannot_say_it_is_one(tmp_path, monkeypatch) -> None:
    """A repetition whose lookup the journal cannot answer in time (a disk stall holding its
    thread) is answered 96, never sent as a new sale: it may be a second charge."""
    import time

    monkeypatch.setattr("agent.transaction.stan_map.SALE_PATIENCE", 0.3)

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            purchase = app_purchase(1170, app_stan=513)
            first = await exchange(rig.socket, purchase)
            lookup = rig.agent.journal.replay

            def stalled(*args):
                time.sleep(0.6)
                return lookup(*args)

            monkeypatch.setattr(rig.agent.journal, "replay", stalled)
            again = await exchange(rig.socket, purchase)
            assert again.text(39) == "96"
            assert again.text(63).startswith("AGENT storage.journal-unusable: ")
            await asyncio.sleep(0.5)
            assert rig.host.state()["requests"]["0200"] == 1
            assert_told_approved_is_live(rig, [first])

    run(scenario())


def test_an_approved_void_and_its_originals_withdrawal_are_one_durable_step(
    tmp_path, monkeypatch
) -> None:
    """The void's approval and the withdrawal of the sale it voids from replays are one commit:
    a disk that fills after the first of two left the void answered 96 (to be reversed) but
    replayable as 00 to the app's repetition, and the sale charged."""

    def full(*args, **kwargs):
        raise JournalError("journal write failed: database or disk is full")

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            assert (await exchange(rig.socket, app_purchase(1160, app_stan=512))).text(39) == "00"
            monkeypatch.setattr(rig.agent.journal, "no_longer_replayable", full)
            void = void_of(512, 1160, 612)
            assert (await exchange(rig.socket, void)).text(39) == "00"
            monkeypatch.undo()
            [withdrawn] = [e for e in rig.agent.journal.events()
                           if e["kind"] == "answer-withdrawn"]  # fmt: skip
            assert withdrawn["why"] == "voided"

    run(scenario())


def test_a_delivered_sale_is_not_reversed_when_its_repeats_answer_is_lost(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            purchase = app_purchase(1200, app_stan=503)
            first = await exchange(rig.socket, purchase)
            assert first.text(39) == "00"
            await send_and_leave(rig.socket, purchase)  # a repeat whose connection closes
            await asyncio.sleep(0.3)
            await settle_reversals(rig)
            assert_told_approved_is_live(rig, [first])
            assert rig.host.state()["reversals"] == 0

    run(scenario())


def test_another_card_under_the_same_stan_and_amount_is_charged(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            purchase = app_purchase(1300, app_stan=504)
            first = await exchange(rig.socket, purchase)
            second = await exchange(rig.socket, with_card(purchase, OTHER_PAN))
            assert first.text(39) == second.text(39) == "00"
            assert first.text(37) != second.text(37), "not the first card's approval"
            pans = {p.get("pan") for p in rig.host.state()["purchases"].values()}
            assert len(rig.host.state()["purchases"]) == 2, pans

    run(scenario())


def test_another_message_class_under_the_same_stan_is_sent(tmp_path) -> None:
    """A completion that reuses a purchase's STAN and amount is a request of its own."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            purchase = app_purchase(1400, app_stan=505)
            assert (await exchange(rig.socket, purchase)).text(39) == "00"
            completion = Message(purchase.mti, dict(purchase.fields))
            completion.fields.update({25: "06", 60: "20000000"})
            await exchange(rig.socket, completion)
            assert rig.host.state()["requests"]["0200"] == 2

    run(scenario())


def test_two_cards_at_once_under_one_stan_are_not_answered_from_one_host_answer(
    tmp_path,
) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add("late", delay=0.2)
            purchase = app_purchase(1500, app_stan=506)
            first, second = await asyncio.gather(
                exchange(rig.socket, purchase),
                exchange(rig.socket, with_card(purchase, OTHER_PAN)),
            )
            assert rig.host.state()["requests"]["0200"] == 2
            assert_told_approved_is_live(rig, [first, second])
            assert first.text(37) != second.text(37)

    run(scenario())


# ------------------------------------------------------------------------- stray answers


def test_a_forged_approval_for_another_terminal_does_not_reverse_the_sale(tmp_path) -> None:
    for kind in ("stray-tid", "stray-mti"):
        folder = tmp_path / kind
        folder.mkdir()

        async def scenario(kind=kind, folder=folder):
            async with gateway_rig(folder) as rig:
                rig.server.faults.add(kind, delay=0.05)
                answer = await exchange(rig.socket, app_purchase(1600))
                assert answer.text(39) == "00"
                await asyncio.sleep(0.2)  # the stray answer has been judged
                assert not rig.agent.journal.has_queued_reversals, kind
                await settle_reversals(rig)
                assert_told_approved_is_live(rig, [answer])
                kinds = [e["kind"] for e in rig.agent.journal.events()]
                assert "stray-answer" in kinds

        run(scenario())


# --------------------------------------------------------------------------- references


def test_a_void_of_a_stan_the_agent_never_saw_is_answered_25_and_not_sent(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            first = await exchange(rig.socket, app_purchase(1700, app_stan=507))
            # the agent's wire STAN of that purchase is some number; the app names one it never
            # used, which may well be another sale's wire STAN
            for stan in range(1, 4):
                answer = await exchange(rig.socket, void_of(stan, 1700, 600 + stan))
                assert answer.text(39) == "25"
                assert answer.text(63).startswith("AGENT request.original-unknown: ")
            assert rig.host.state()["requests"]["0200"] == 1, "no void reached the host"
            assert_told_approved_is_live(rig, [first])

    run(scenario())


def test_a_void_naming_another_batch_is_not_remapped_into_this_one(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            first = await exchange(rig.socket, app_purchase(1800, app_stan=508))
            batch = rig.agent.journal.batch
            other = f"{batch + 7:06d}"
            answer = await exchange(rig.socket, void_of(508, 1800, 609, batch=other))
            assert answer.text(39) == "25"
            assert_told_approved_is_live(rig, [first])
            # named in its own batch, it reaches its original
            answer = await exchange(rig.socket, void_of(508, 1800, 610, batch=f"{batch:06d}"))
            assert answer.text(39) == "00"
            assert charge(rig, first.text(37)).get("voided")
            # and a repetition of the voided sale is not answered from its approval
            again = await exchange(rig.socket, app_purchase(1800, app_stan=508))
            assert_told_approved_is_live(rig, [again])

    run(scenario())
