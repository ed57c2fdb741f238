"""An approval the app never got is reversed: one that arrives late, after the host had already
refused the same request without a MAC (a host that lost the session answers 97 at once, then its
real answer comes). One that arrives after a timeout is the timeout's reversal's (test_gateway).
One whose answer never comes, taken in by the host after its reversal was answered 25, is found
by the reversal's recheck."""

import asyncio
import contextlib
import sqlite3

from agent.service.daemon import recheck_reversals
from tests.integration.gateway_rig import app_purchase, exchange, gateway_rig


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def live_charges(rig) -> list[dict]:
    return [p for p in rig.host.state()["purchases"].values() if not p["reversed"]]


def test_a_real_approval_after_a_macless_97_is_reversed(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.put_tms()
            rig.server.faults.add("refused-first")  # 97 without a MAC, then the real approval
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "00"  # the recovery's retry, under a new STAN
            for _ in range(100):  # the late approval's reversal goes out in the background
                if len(live_charges(rig)) == 1 and not rig.agent.journal.has_queued_reversals:
                    break
                await rig.agent.reversals.send()
                await asyncio.sleep(0.02)
            assert len(rig.host.state()["purchases"]) == 2
            assert len(live_charges(rig)) == 1, "one live charge for one sale"
            kinds = [e["kind"] for e in rig.agent.journal.events()]
            assert "late-approval-reversed" in kinds

    run(scenario())


def test_a_late_approval_under_the_tid_a_re_provisioning_replaced_is_reversed(tmp_path) -> None:
    """The host refuses a sale 97 without a MAC; recovery re-provisions the terminal (the
    acquirer moved it to another TID), signs in there and the retry is approved. The first
    try's real approval comes after, naming the old TID: it answers a request the agent sent
    under that TID, and is reversed, not ignored as another terminal's."""
    from agent.sim.host import TEST_TMK
    from tests.integration.gateway_rig import MID

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=5.0) as rig:
            rig.host.register("10000002", MID, TEST_TMK)  # the acquirer's new TID for it
            rig.put_tms(tid="10000002")
            rig.server.faults.add("refused-late", delay=2.0, mti="0200")
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "00"
            assert rig.agent.config.terminal.tid == "10000002"
            journal = rig.agent.journal
            for _ in range(60):
                if "late-approval-reversed" in [e["kind"] for e in journal.events()]:
                    break
                await asyncio.sleep(0.1)
            kinds = [e["kind"] for e in journal.events()]
            assert "late-approval-reversed" in kinds and "stray-answer" not in kinds
            [reversal] = journal.queued_reversals()
            assert reversal.message.text(41) == "10000001"  # under the TID it went with

    run(scenario())


def test_a_late_approval_of_a_refusal_the_journal_took_late_is_reversed(
    tmp_path, monkeypatch
) -> None:
    """The host refuses a sale (a 97 without a MAC) and approves it a moment later; the disk
    refused the refusal's record, so the app got 96 and the refusal was kept in memory. Once
    the journal takes it, the late approval is judged and reversed: it does not wait for a
    restart with the customer charged."""
    from agent.journal import JournalError

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            journal = rig.agent.journal
            finish = journal.finish
            refused = []

            def full_once(transaction, state, response=None, *args, **kwargs):
                if state == "completed" and getattr(response, "code", None) == "97" and not refused:
                    refused.append(transaction)
                    raise JournalError(f"journal {journal.path} write failed: disk is full")
                return finish(transaction, state, response, *args, **kwargs)

            monkeypatch.setattr(journal, "finish", full_once)
            rig.server.faults.add("refused-first")  # 97 without a MAC, then the real approval
            answer = await exchange(rig.socket, app_purchase(1000))
            assert answer.text(39) == "96", answer
            assert answer.text(63).startswith("AGENT storage.journal-unwritable: ")
            await _until(lambda: rig.agent.reversals._early, 5, "the late approval held")
            await rig.agent.sender.write_outcomes()  # the disk has room again
            await _until(lambda: journal.has_queued_reversals, 5, "its reversal queued")
            await rig.agent.reversals.send()
            assert live_charges(rig) == []

    run(scenario())


def _reversal_states(rig) -> list[tuple[str, bool]]:
    """(state, recheck pending) of each reversal row, read from the SQLite file itself."""
    with contextlib.closing(sqlite3.connect(rig.config.journal.path)) as db:
        rows = db.execute("SELECT state, recheck_at IS NOT NULL FROM reversals ORDER BY id")
        return [(state, bool(pending)) for state, pending in rows]


async def _until(condition, seconds: float, what: str) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} within {seconds} s")


@contextlib.asynccontextmanager
async def _reversal_before_its_original(tmp_path, purchase, recheck_after: float):
    """The primary stops reading: ``purchase`` times out (98), its reversal goes through the
    backup and gets 25 ("nothing to reverse", its recheck due in ``recheck_after`` seconds);
    the host takes the purchase in 1.5 s later and approves it, its answer lost."""
    async with gateway_rig(
        tmp_path,
        backup=True,
        response_timeout=0.5,
        host_options={"failover_after": 1},
        sections={"reversal": {"recheck_after": recheck_after}},
    ) as rig:
        rig.server.faults.add("held", delay=1.5)
        response = await exchange(rig.socket, purchase)
        assert response.text(39) == "98"  # no response: reversal queued
        await rig.agent.reversals.send()
        assert _reversal_states(rig) == [("nothing-to-reverse", True)]
        yield rig


def test_the_apps_reversal_of_what_the_host_never_had_is_not_sent_again(tmp_path) -> None:
    """DESIGN.md section 15: an app's 0400 for a transaction the agent reverses already is
    answered from that reversal. One the host answered 25 (the original had not reached it) is
    answered 25 here, and the host sees no second 0400; the agent's recheck stays its own."""
    from tests.integration.gateway_rig import reversal_of

    async def scenario():
        purchase = app_purchase(1000, app_stan=930)
        async with _reversal_before_its_original(tmp_path, purchase, 600.0) as rig:
            sent = rig.host.state()["requests"].get("0400", 0)
            answer = await exchange(rig.socket, reversal_of(purchase))
            assert (answer.mti, answer.text(39), answer.text(11)) == ("0410", "25", "000930")
            assert answer.text(63).startswith("AGENT request.original-not-at-host: ")
            assert rig.host.state()["requests"].get("0400", 0) == sent, "not sent twice"

    run(scenario())


def test_a_reversal_that_overtook_its_original_is_sent_again(tmp_path) -> None:
    """The primary stops reading: the purchase times out, the reversal goes through the backup
    and gets 25, then the host takes the purchase in and approves it, its answer lost. The
    recheck finds and reverses that charge; sales never waited for it."""

    async def scenario():
        async with _reversal_before_its_original(tmp_path, app_purchase(1000), 1.0) as rig:
            # sales go on while the recheck waits
            assert (await exchange(rig.socket, app_purchase(2000, app_stan=902))).text(39) == "00"
            await _until(lambda: len(rig.host.state()["purchases"]) == 2, 5, "the held purchase")
            assert len(live_charges(rig)) == 2  # the held one is charged, nobody knows
            rechecks = asyncio.create_task(recheck_reversals(rig.agent))
            try:
                await _until(lambda: len(live_charges(rig)) == 1, 10, "the recheck's reversal")
            finally:
                rechecks.cancel()
            [live] = live_charges(rig)
            assert live["amount"] == "000000002000"
            assert _reversal_states(rig) == [("confirmed", False)]
            [event] = [e for e in rig.agent.journal.events() if e.get("rechecked")]
            assert event["outcome"] == "confirmed"
            assert (await rig.agent.status())["reversals_to_recheck"] == 0

    run(scenario())


def test_a_recheck_answered_25_again_closes_the_reversal_for_good(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"reversal": {"recheck_after": 0.2}}) as rig:
            rig.queue_reversal("123456", 1500)  # the host never saw it
            assert await rig.agent.reversals.send() == 1
            assert (await rig.agent.status())["reversals_to_recheck"] == 1
            assert await rig.agent.reversals.recheck() == 0  # not due yet: nothing sent
            assert rig.host.state()["reversals"] == 1
            await asyncio.sleep(0.3)
            assert await rig.agent.reversals.recheck() == 0
            assert rig.host.state()["reversals"] == 2
            assert _reversal_states(rig) == [("nothing-to-reverse", False)]
            assert rig.agent.journal.recheck_in() is None
            assert await rig.agent.reversals.recheck() == 0
            assert rig.host.state()["reversals"] == 2  # once, never again

    run(scenario())


def test_a_recheck_without_an_answer_goes_again_later(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(
            tmp_path, response_timeout=0.3, sections={"reversal": {"recheck_after": 0.2}}
        ) as rig:
            rig.queue_reversal("123456", 1500)
            assert await rig.agent.reversals.send() == 1
            await asyncio.sleep(0.3)
            rig.server.faults.add("no-answer")
            assert await rig.agent.reversals.recheck() == 0
            assert _reversal_states(rig) == [("nothing-to-reverse", True)]
            due_in = rig.agent.journal.recheck_in()
            # postponed from when the 0.3 s timeout ran out, by at least half a period (0.1 s)
            assert due_in is not None and due_in > 0.1 - 0.01

    run(scenario())
