"""An approval the app never got is reversed: one that arrives late, after the host had already
refused the same request without a MAC (a host that lost the session answers 97 at once, then its
real answer comes). One that arrives after a timeout is the timeout's reversal's (test_gateway)."""

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
