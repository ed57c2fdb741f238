"""A state disk frozen under the agent (``fsfreeze``, as an LVM snapshot or a backup does): every
journal commit blocks in the kernel for as long as the freeze lasts. The event loop never waits
for it, so the status and the module socket keep answering, a sale is answered 96 unsent, and
nothing is left pending once the disk thaws."""

import asyncio
import subprocess
import time

from drivers.module import Command, Status
from tests.integration.gateway_rig import app_purchase, exchange, gateway_rig, module_command

PATIENCE = 1.5  # the sale's wait for the journal, shortened from 10 s for the test


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 90))


def fsfreeze(flag: str, folder) -> None:
    subprocess.run(["fsfreeze", flag, str(folder)], check=True, timeout=10)


def test_a_frozen_state_disk_stops_no_socket_and_loses_nothing(
    tmp_path, freezable_disk, monkeypatch
) -> None:
    monkeypatch.setattr("agent.transaction.sender.SALE_PATIENCE", PATIENCE)
    monkeypatch.setattr("agent.transaction.stan_map.SALE_PATIENCE", PATIENCE)

    async def scenario():
        async with gateway_rig(tmp_path, journal_dir=freezable_disk) as rig:
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            sent_before = len(rig.host.state()["purchases"])
            await asyncio.to_thread(fsfreeze, "-f", freezable_disk)
            try:
                started = time.monotonic()
                sale = asyncio.create_task(exchange(rig.socket, app_purchase(2000)))
                await asyncio.sleep(0.2)  # the sale is waiting for its pending row
                status = await rig.agent.status()
                assert status["tid"] and time.monotonic() - started < 3
                answer = await module_command(rig.module_socket, Command.PING, b"", seq=1)
                assert answer[0] == Status.OK
                refused = await sale
                assert refused.text(39) == "96", refused.text(63)
                assert "frozen or failing" in refused.text(63)
                assert refused.text(63).startswith("AGENT storage.journal-slow: ")
                assert time.monotonic() - started < PATIENCE + 3
                assert len(rig.host.state()["purchases"]) == sent_before  # never sent
            finally:
                await asyncio.to_thread(fsfreeze, "-u", freezable_disk)
            assert (await exchange(rig.socket, app_purchase(3000))).text(39) == "00"
            journal = rig.agent.journal
            states = [t["state"] for t in await journal.run(journal.transactions)]
            assert "pending" not in states
            assert states.count("not-sent") == 1  # the frozen sale, closed once recorded

    run(scenario())


def test_with_a_reversal_queued_a_sale_on_a_frozen_disk_is_answered_in_time(
    tmp_path, freezable_disk, monkeypatch
) -> None:
    """The reversal that goes before the sale waits on the journal too: the sale gets its 96
    within its patience, the reversal goes on and is sent once the disk thaws."""
    monkeypatch.setattr("agent.transaction.sender.SALE_PATIENCE", PATIENCE)
    monkeypatch.setattr("agent.transaction.reversals.SALE_PATIENCE", PATIENCE)
    monkeypatch.setattr("agent.transaction.stan_map.SALE_PATIENCE", PATIENCE)

    async def scenario():
        async with gateway_rig(tmp_path, journal_dir=freezable_disk, response_timeout=0.3) as rig:
            rig.server.faults.add("no-answer")
            assert (await exchange(rig.socket, app_purchase(1000, app_stan=1))).text(39) == "98"
            assert len(rig.agent.journal.queued_reversals()) == 1
            await asyncio.to_thread(fsfreeze, "-f", freezable_disk)
            try:
                started = time.monotonic()
                refused = await exchange(rig.socket, app_purchase(2000, app_stan=2))
                assert refused.text(39) == "96", refused.text(63)
                assert "the disk frozen" in refused.text(63)
                assert time.monotonic() - started < PATIENCE + 3
            finally:
                await asyncio.to_thread(fsfreeze, "-u", freezable_disk)
            assert (await exchange(rig.socket, app_purchase(3000, app_stan=3))).text(39) == "00"
            assert rig.agent.journal.queued_reversals() == []
            by_amount = {p["amount"]: p["reversed"] for p in rig.host.state()["purchases"].values()}
            assert by_amount == {"000000001000": True, "000000003000": False}

    run(scenario())


async def _first_reversed_before(second: asyncio.Task, rig, reason: str) -> None:
    """``second``, the sale (2000) sent as the disk thawed, is answered 96, not sent ahead of
    the first sale's (1000) reversal (``reason``), queued once the disk answers; the sale after
    them (3000) is approved, and of the two the host took the first is reversed."""
    held = await second
    assert held.text(39) == "96", held.text(63)
    assert held.text(63).startswith("AGENT storage.journal-slow: the journal has not yet")
    for _ in range(100):  # the first one's close ends once the disk answers: reversal queued
        if rig.agent.journal.queued_reversals():
            break
        await asyncio.sleep(0.05)
    assert [r.reason for r in rig.agent.journal.queued_reversals()] == [reason]
    third = await exchange(rig.socket, app_purchase(3000, app_stan=3))
    assert third.text(39) == "00", third.text(63)
    by_amount = {p["amount"]: p["reversed"] for p in rig.host.state()["purchases"].values()}
    assert by_amount == {"000000001000": True, "000000003000": False}


def test_a_host_timeout_on_a_frozen_disk_is_answered_98_in_time(
    tmp_path, freezable_disk, monkeypatch
) -> None:
    """The host did not answer and the disk froze meanwhile: closing the row waits on the
    journal, the app does not; a sale meanwhile is not sent ahead of the reversal the close
    queues once the disk thaws."""
    monkeypatch.setattr("agent.transaction.sender.SALE_PATIENCE", PATIENCE)
    monkeypatch.setattr("agent.transaction.stan_map.SALE_PATIENCE", PATIENCE)

    async def scenario():
        async with gateway_rig(tmp_path, journal_dir=freezable_disk, response_timeout=1.0) as rig:
            rig.server.faults.add("no-answer")
            sale = asyncio.create_task(exchange(rig.socket, app_purchase(1000, app_stan=1)))
            await asyncio.sleep(0.5)  # recorded and sent: the host keeps it waiting
            await asyncio.to_thread(fsfreeze, "-f", freezable_disk)
            try:
                started = time.monotonic()
                answer = await sale
                assert answer.text(39) == "98", answer.text(63)
                assert time.monotonic() - started < PATIENCE + 3
                # a sale now, the disk thawing under it: the first one's reversal, not yet
                # queued, must still go before it
                second = asyncio.create_task(exchange(rig.socket, app_purchase(2000, app_stan=2)))
                await asyncio.sleep(0.2)
            finally:
                await asyncio.to_thread(fsfreeze, "-u", freezable_disk)
            await _first_reversed_before(second, rig, "98")

    run(scenario())


def test_an_approval_recorded_after_the_app_was_told_96_is_reversed_before_the_next_sale(
    tmp_path, freezable_disk, monkeypatch
) -> None:
    """The host's approval came as the disk froze: the app is told 96 in time, the approval
    recorded once the disk thaws is reversed (06), and a sale meanwhile is not sent ahead of
    that reversal."""
    monkeypatch.setattr("agent.transaction.sender.SALE_PATIENCE", PATIENCE)
    monkeypatch.setattr("agent.transaction.stan_map.SALE_PATIENCE", PATIENCE)

    async def scenario():
        async with gateway_rig(tmp_path, journal_dir=freezable_disk, response_timeout=3.0) as rig:
            rig.server.faults.add("late", delay=1.0)  # the approval comes as the disk freezes
            sale = asyncio.create_task(exchange(rig.socket, app_purchase(1000, app_stan=1)))
            await asyncio.sleep(0.5)  # recorded and sent
            await asyncio.to_thread(fsfreeze, "-f", freezable_disk)
            try:
                answer = await sale
                assert answer.text(39) == "96", answer.text(63)
                told = "AGENT storage.journal-slow: the answer was not checked and recorded"
                assert answer.text(63).startswith(told)
                second = asyncio.create_task(exchange(rig.socket, app_purchase(2000, app_stan=2)))
                await asyncio.sleep(0.2)
            finally:
                await asyncio.to_thread(fsfreeze, "-u", freezable_disk)
            await _first_reversed_before(second, rig, "06")

    run(scenario())


def test_with_a_reversal_queued_a_settlement_on_a_frozen_disk_is_answered_in_time(
    tmp_path, freezable_disk, monkeypatch
) -> None:
    """A settlement waits for the queued reversals, within one bounded try as a sale does: on
    a frozen disk it gets its 96, and goes once the reversal is closed."""
    from agent.wire.message import Message

    monkeypatch.setattr("agent.transaction.sender.SALE_PATIENCE", PATIENCE)
    monkeypatch.setattr("agent.transaction.reversals.SALE_PATIENCE", PATIENCE)
    monkeypatch.setattr("agent.transaction.stan_map.SALE_PATIENCE", PATIENCE)
    settlement = Message("0500", {11: "000010", 48: "0" * 62, 49: "156", 60: "00000000201"})

    async def scenario():
        async with gateway_rig(tmp_path, journal_dir=freezable_disk, response_timeout=0.3) as rig:
            rig.server.faults.add("no-answer")
            assert (await exchange(rig.socket, app_purchase(1000, app_stan=1))).text(39) == "98"
            await asyncio.to_thread(fsfreeze, "-f", freezable_disk)
            try:
                started = time.monotonic()
                held = await exchange(rig.socket, settlement)
                assert held.text(39) == "96", held.text(63)
                assert time.monotonic() - started < PATIENCE + 3
                assert "0500" not in rig.host.state()["requests"]
            finally:
                await asyncio.to_thread(fsfreeze, "-u", freezable_disk)
            for _ in range(100):
                if not rig.agent.journal.queued_reversals():
                    break
                await asyncio.sleep(0.05)
            assert (await exchange(rig.socket, settlement)).text(39) == "00"
            [charge] = rig.host.state()["purchases"].values()
            assert charge["reversed"]

    run(scenario())
