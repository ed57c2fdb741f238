"""The reversal queue never locks a terminal out of sales (DESIGN.md section 8): a reversal goes
before the next sale, but after reversal.attempts failed tries in a row sales go on while it is
retried in the background; a reversal refused because the host lost the session starts recovery
and then goes again."""

import asyncio

import pytest

from agent.transaction.reversals import ReversalRefused
from tests.integration.gateway_rig import TID, app_purchase, exchange, gateway_rig


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_sales_go_on_after_the_reversal_failed_its_attempts(tmp_path) -> None:
    async def scenario():
        sections = {"reversal": {"attempts": 3}}
        async with gateway_rig(tmp_path, response_timeout=0.3, sections=sections) as rig:
            rig.queue_reversal("123456", 1500)
            rig.server.faults.add("no-answer", count=3)  # the reversal's first three tries
            codes = [(await exchange(rig.socket, app_purchase(1000))).text(39) for _ in range(3)]
            assert codes == ["96", "96", "00"], "the third failed try lets the sale through"
            [stuck] = rig.agent.journal.queued_reversals()
            assert stuck.attempts == 3
            status = (
                await rig.agent.status()
            )  # what agent status and the fleet's state message show
            assert (status["reversals_queued"], status["reversals_stuck"]) == (1, 1)
            assert await rig.agent.reversals.send() == 1  # the host answers now: closed (25)
            assert not rig.agent.journal.has_queued_reversals
            status = await rig.agent.status()
            assert (status["reversals_queued"], status["reversals_stuck"]) == (0, 0)

    run(scenario())


def test_a_reversal_refused_for_a_lost_session_recovers_and_goes_again(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.put_tms()
            rig.queue_reversal("123456", 1500)
            rig.host.forget(TID)  # the host lost the session: 97 to everything but a sign-in
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "00", response
            assert not rig.agent.journal.has_queued_reversals  # sent again after the sign-in
            state = rig.host.state()
            assert state["requests"]["0800"] >= 2 and state["requests"]["0400"] == 2
            kinds = [e["kind"] for e in rig.agent.journal.events()]
            assert "recovery.refused" in kinds and "reversal-confirmed" in kinds

    run(scenario())


def test_a_reversal_refused_after_an_approved_sign_in_is_not_the_sales_refusal(
    tmp_path,
) -> None:
    """The host answers the reversal 97 even after it approved the sign-in: the sale was never
    sent, so it is not "refused" (no request-refused finding, no advice about this kind of
    request), the terminal stays registered, and once the reversal is stuck sales go on."""

    async def scenario():
        sections = {"reversal": {"attempts": 2}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            rig.put_tms()
            rig.queue_reversal("123456", 1500)
            rig.server.faults.add("refused-first", count=10, mti="0400")
            first = await exchange(rig.socket, app_purchase(1000))
            assert first.text(39) == "96"
            assert first.text(63).startswith("AGENT reversal.refused: the host refuses with 97 ")
            assert rig.agent.recovery.state.value == "registered"
            assert rig.agent.recovery.refused_requests.by_finding == {}
            assert "0200" not in rig.host.state()["requests"]
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"  # stuck
            kinds = [e["kind"] for e in rig.agent.journal.events()]
            assert "request-refused" not in kinds and "recovery.reversal-refused" in kinds

    run(scenario())


def test_a_25_without_a_mac_closes_a_reversal(tmp_path) -> None:
    """Hosts MAC approvals, not declines: 12 and 25 close a reversal with or without a MAC
    (the recheck still follows); a confirmation without one does not."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.queue_reversal("123456", 1500)  # the host never saw it: 25
            rig.server.faults.add("no-mac", mti="0400")
            assert await rig.agent.reversals.send() == 1
            assert not rig.agent.journal.has_queued_reversals
            assert rig.agent.journal.rechecks_waiting() == 1
            approved = await exchange(rig.socket, app_purchase(1000, app_stan=77))
            assert approved.text(39) == "00"
            # an approval without a MAC is no confirmation: the sale stays queued for reversal
            rig.agent.journal.reverse_undelivered(rig.agent.journal.transactions()[-1]["id"])
            rig.server.faults.add("no-mac", mti="0400")
            assert (await exchange(rig.socket, app_purchase(1001))).text(39) == "96"
            assert rig.agent.journal.has_queued_reversals

    run(scenario())


def test_no_sale_waits_for_a_stuck_reversal(tmp_path) -> None:
    async def scenario():
        sections = {"reversal": {"attempts": 2}}
        async with gateway_rig(tmp_path, response_timeout=0.3, sections=sections) as rig:
            rig.queue_reversal("123456", 1500)
            rig.server.faults.add("no-answer", count=100, mti="0400")
            codes = [(await exchange(rig.socket, app_purchase(1000))).text(39) for _ in range(2)]
            assert codes == ["96", "00"]
            tried = rig.host.state()["requests"]["0400"]
            assert tried == 2
            for _ in range(3):  # stuck: tried in the background only, never before a sale
                assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            assert rig.host.state()["requests"]["0400"] == tried
            assert rig.agent.journal.has_queued_reversals

    run(scenario())


def test_a_reversal_the_profile_no_longer_carries_does_not_lock_sales_out(tmp_path) -> None:
    """Queued under one wire profile, it cannot be encoded under the one in use now (a reload
    narrowed field 60): each try fails, is counted, and past reversal.attempts sales go on."""

    async def scenario():
        sections = {"reversal": {"attempts": 2}}
        async with gateway_rig(tmp_path, response_timeout=0.3, sections=sections) as rig:
            rig.queue_reversal("123456", 1500)
            journal = rig.agent.journal
            with journal._write() as db:  # the template as the earlier profile allowed it
                db.execute("UPDATE reversals SET fields = json_set(fields, '$.60', ?)",
                           ("22" + "0" * 40,))  # fmt: skip
            codes = [(await exchange(rig.socket, app_purchase(1000))).text(39) for _ in range(2)]
            assert codes == ["96", "00"], "the second failed try lets the sale through"
            [stuck] = journal.queued_reversals()
            assert stuck.attempts == 2
            assert "0400" not in rig.host.state()["requests"]

    run(scenario())


def test_the_apps_reversal_of_what_a_stuck_reversal_reverses_is_not_sent(tmp_path) -> None:
    """The agent's own reversal keeps failing (stuck, sales go on); the app sends its 0400 of
    the same sale: answered 96 (still being reversed), not a second reversal to the host."""
    from tests.integration.gateway_rig import reversal_of

    async def scenario():
        sections = {"reversal": {"attempts": 2}}
        async with gateway_rig(tmp_path, response_timeout=0.3, sections=sections) as rig:
            rig.server.faults.add("no-answer", mti="0200")
            purchase = app_purchase(1600, app_stan=410)
            assert (await exchange(rig.socket, purchase)).text(39) == "98"
            rig.server.faults.add("no-answer", count=100, mti="0400")
            codes = [(await exchange(rig.socket, app_purchase(1000))).text(39) for _ in range(2)]
            assert codes[-1] == "00", "stuck: sales go on"
            tried = rig.host.state()["requests"]["0400"]
            answer = await exchange(rig.socket, reversal_of(purchase))
            assert answer.text(39) == "96"
            assert answer.text(63).startswith("AGENT request.original-reversal-pending: ")
            assert rig.host.state()["requests"]["0400"] == tried  # not sent
            rig.server.faults.clear()
            assert await rig.agent.reversals.send() == 1  # the agent's own, at last
            answer = await exchange(rig.socket, reversal_of(purchase))
            assert answer.text(39) == "00"  # from that reversal
            assert rig.host.state()["requests"]["0400"] == tried + 1  # the app's never went

    run(scenario())


def test_sales_at_once_share_one_try_of_a_reversal(tmp_path) -> None:
    """Before a reversal is stuck a sale waits for one bounded try, never behind other sales'
    tries: five sales at once, one try, five answers."""

    async def scenario():
        sections = {"reversal": {"attempts": 3}}
        async with gateway_rig(tmp_path, response_timeout=0.3, sections=sections) as rig:
            rig.queue_reversal("123456", 1500)
            rig.server.faults.add("no-answer", count=100, mti="0400")
            answers = await asyncio.gather(
                *(exchange(rig.socket, app_purchase(1000 + n)) for n in range(5))
            )
            assert [a.text(39) for a in answers] == ["96"] * 5
            assert rig.host.state()["requests"]["0400"] == 1

    run(scenario())


def test_a_stuck_reversal_is_told_once_however_the_tries_go_on(tmp_path, monkeypatch) -> None:
    """DESIGN.md section 8: after reversal.attempts failed tries, reversal-stuck fires for that
    reversal, once: not again at every failed pass of the background sender (the first stuck
    one holds the lane up), and also for one that a sale's try took past the limit."""
    from agent.service import daemon

    monkeypatch.setattr(daemon, "REVERSAL_FIRST_PAUSE", 0.05)

    async def scenario():
        sections = {"reversal": {"attempts": 2, "retry_max": 0.1}}
        async with gateway_rig(tmp_path, response_timeout=0.2, sections=sections) as rig:
            rig.queue_reversal("123456", 1500)
            rig.queue_reversal("123457", 1600)
            for reversal in rig.agent.journal.queued_reversals()[1:]:
                for _ in range(3):  # past the limit already (a sale's tries)
                    rig.agent.journal.reversal_attempted(reversal.id, "no answer")
            rig.server.faults.add("no-answer", count=1000, mti="0400")
            sender = asyncio.create_task(daemon.send_reversals_until_done(rig.agent))
            rig.agent.reversals.waiting.set()
            try:
                while (
                    len([e for e in rig.agent.journal.events() if e["kind"] == "reversal-stuck"])
                    < 2
                ):
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1.0)  # more failed passes
            finally:
                sender.cancel()
            told = [e["stan"] for e in rig.agent.journal.events() if e["kind"] == "reversal-stuck"]
            assert sorted(told) == sorted(set(told)) and len(told) == 2, told

    run(scenario())


def test_a_reversal_the_host_will_not_close_keeps_none_of_the_others_from_it(tmp_path) -> None:
    """DESIGN.md section 8: every approval not delivered is reversed. A reversal the host keeps
    refusing (here one made under a TID re-provisioned since: the host answers 97) is tried, and
    the one queued after it still goes and is closed: one lane is not one reversal."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.queue_reversal("123456", 1500, tid="10000009")  # a TID the host does not know
            rig.queue_reversal("123457", 1600)
            journal = rig.agent.journal
            with pytest.raises(ReversalRefused):
                await rig.agent.reversals.send()
            [left] = journal.queued_reversals()
            assert left.message.text(11) == "123456" and left.attempts == 1
            assert rig.host.state()["requests"]["0400"] == 2  # the second went, and was closed

    run(scenario())


def test_a_reversal_the_host_keeps_refusing_is_told_stuck(tmp_path, monkeypatch) -> None:
    """After reversal.attempts tries refused (not only unanswered), reversal-stuck fires."""
    from agent.service import daemon

    monkeypatch.setattr(daemon, "REVERSAL_FIRST_PAUSE", 0.05)

    async def scenario():
        sections = {"reversal": {"attempts": 2, "retry_max": 0.1}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            rig.queue_reversal("123456", 1500, tid="10000009")  # the host answers it 97
            sender = asyncio.create_task(daemon.send_reversals_until_done(rig.agent))
            rig.agent.reversals.waiting.set()
            try:
                async with asyncio.timeout(30):
                    while not [
                        e for e in rig.agent.journal.events() if e["kind"] == "reversal-stuck"
                    ]:
                        await asyncio.sleep(0.05)
            finally:
                sender.cancel()
            [stuck] = [e for e in rig.agent.journal.events() if e["kind"] == "reversal-stuck"]
            assert stuck["stan"] == "123456" and "97" in stuck["last_error"]

    run(scenario())


def test_a_conflict_without_a_mac_closes_the_reversal(tmp_path) -> None:
    """Hosts MAC approvals, not declines (section 8): a 22 without a MAC closes the reversal as
    a conflict a person must reconcile, instead of sending it again for ever."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            [sale] = [t for t in rig.agent.journal.transactions() if t["mti"] == "0200"]
            rig.queue_reversal(sale["stan"], 1001)  # not the amount the host has: 22
            rig.server.faults.add("no-mac", mti="0400")
            assert await rig.agent.reversals.send() == 1
            assert not rig.agent.journal.has_queued_reversals
            [conflict] = [e for e in rig.agent.journal.events() if e["kind"] == "reversal-conflict"]
            assert conflict["response_code"] == "22"
            # it could not be proven the host's: sent once more later, as 12 and 25 are
            assert rig.agent.journal.rechecks_waiting() == 1

    run(scenario())


def test_a_sale_waits_for_the_reversals_whole_try_not_only_the_journals_patience(
    tmp_path, monkeypatch
) -> None:
    """With a healthy disk and a host slow on the reversal, the sale gets that one try's own
    outcome (DESIGN.md section 8: "at most one bounded try"), not a give-up blaming the disk
    after the journal's patience."""
    monkeypatch.setattr("agent.transaction.reversals.SALE_PATIENCE", 0.5)

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.8) as rig:
            rig.queue_reversal("123456", 1500)
            rig.server.faults.add("no-answer")  # the reversal's try: the host's whole 0.8 s
            answer = await exchange(rig.socket, app_purchase(1000))
            assert answer.text(39) == "96" and answer.text(63).startswith("AGENT reversal.pending")
            assert "did not end within" not in answer.text(63)
            [queued] = rig.agent.journal.queued_reversals()
            assert queued.attempts == 1

    run(scenario())


@pytest.mark.parametrize("fault", ["wrong-mac", "no-answer"])
def test_an_older_reversal_out_of_tries_lets_no_sale_ahead_of_a_fresh_one(tmp_path, fault) -> None:
    """DESIGN.md section 8: a reversal goes before the next sale until reversal.attempts tries
    of its own have failed. The older one's last try failing beside a fresh one (answered with a
    wrong MAC each, or the host silent, so the fresh one was not even tried) lets no sale ahead
    of the fresh one; its own next try closes it, and the sale goes."""

    async def scenario():
        sections = {"reversal": {"attempts": 3}}
        async with gateway_rig(tmp_path, response_timeout=0.3, sections=sections) as rig:
            journal = rig.agent.journal
            for amount in (1500, 1600):  # two sales the host approved, to be reversed
                assert (await exchange(rig.socket, app_purchase(amount))).text(39) == "00"
            sold = [t["stan"] for t in journal.transactions() if t["mti"] == "0200"]
            rig.queue_reversal(sold[0], 1500)
            rig.server.faults.add("no-answer", count=2)  # its first two tries
            for _ in range(2):
                assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "96"
            rig.queue_reversal(sold[1], 1600)  # a fresh one beside it
            rig.server.faults.add(fault, count=2, mti="0400")
            held = await exchange(rig.socket, app_purchase(2000))
            assert held.text(39) == "96", held.text(63)
            attempts = {r.message.text(11): r.attempts for r in journal.queued_reversals()}
            assert attempts == {sold[0]: 3, sold[1]: 1 if fault == "wrong-mac" else 0}
            rig.server.faults.clear()
            assert (await exchange(rig.socket, app_purchase(3000))).text(39) == "00"
            [stuck] = journal.queued_reversals()
            assert stuck.message.text(11) == sold[0]  # out of tries: in the background now
            reversed_ = {p["amount"]: p["reversed"] for p in rig.host.state()["purchases"].values()}
            assert reversed_["000000001600"]  # the fresh one, closed before the sale

    run(scenario())
