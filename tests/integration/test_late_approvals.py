"""An approval the app never got is reversed: one that arrives late, after the host had already
refused the same request without a MAC (a host that lost the session answers 97 at once, then its
real answer comes), and one that arrives after the request timed out."""

import asyncio

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


def test_a_late_approval_of_a_timed_out_purchase_is_reversed_once(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.3) as rig:
            rig.server.faults.add("late", delay=0.6)
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "98"
            await asyncio.sleep(0.6)  # the approval arrives: the reversal (98) is already queued
            assert [r.reason for r in rig.agent.journal.queued_reversals()] == ["98"]
            assert await rig.agent.reversals.send() == 1
            assert live_charges(rig) == []
            assert rig.host.state()["repeated_reversals"] == 0

    run(scenario())
