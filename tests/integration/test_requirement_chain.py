"""The host's processing requirement read on every answer (DESIGN.md section 4): the 0810 of the
agent's own sign-in and each download step feed one queue, so the chain real hosts run (sign-in
asks 4, the end of the CA keys asks 5, the end of the IC parameters asks 9) completes, in order,
without an app request."""

from __future__ import annotations

import asyncio

from tests.integration.gateway_rig import TID, app_purchase, exchange, gateway_rig


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def downloaded(rig) -> list[str]:
    return [
        e["section"] for e in rig.agent.journal.events() if e["kind"] == "parameters-downloaded"
    ]


def test_a_posp_style_host_chains_the_downloads_from_the_sign_in(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            rig.host.chain_downloads = True
            await rig.agent.sender.sign_in()
            await rig.agent.host_requests.idle()
            assert downloaded(rig) == ["ca_keys", "ic_parameters", "contactless"]
            assert rig.host.ledger.requests.get("0200", 0) == 0  # no app request was needed
            stored = rig.agent.downloads.store.read()
            assert stored["ca_keys"]["keys"] and stored["ic_parameters"]["aids"]

    run(scenario())


def test_the_chain_from_an_apps_purchase_answer(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.host.chain_downloads = True
            rig.host.terminals[TID].asks = 4
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            await rig.agent.host_requests.idle()
            assert downloaded(rig) == ["ca_keys", "ic_parameters", "contactless"]

    run(scenario())


def test_the_pause_keeps_a_repeat_but_never_a_chains_own_requirement(tmp_path) -> None:
    """A requirement just satisfied is not acted on again while answers still carry it; the end
    message of another chain raising it is the host chaining, and is acted on."""

    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            rig.host.chain_downloads = True
            await rig.agent.sender.sign_in()
            await rig.agent.host_requests.idle()
            rig.host.terminals[TID].asks = 5  # an app's answer asks again: just done, kept
            assert (await exchange(rig.socket, app_purchase(1100))).text(39) == "00"
            await rig.agent.host_requests.idle()
            assert downloaded(rig) == ["ca_keys", "ic_parameters", "contactless"]
            await rig.agent.host_requests.run(4)  # a technician's: its end asks 5 again
            await rig.agent.host_requests.idle()
            assert downloaded(rig) == ["ca_keys", "ic_parameters", "contactless"] * 2

    run(scenario())


def test_every_sign_in_whose_answer_asks_4_gets_the_ca_keys_within_the_pause(tmp_path) -> None:
    """Three sign-ins in a row, each 0810 asking 4 (the host changed its CA keys): the end of
    another chain raising it, acted on each time (DESIGN.md section 4: the pause never
    suppresses it), each chain run to its end."""

    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            rig.host.chain_downloads = True
            counts = []
            for _ in range(3):
                await rig.agent.sender.sign_in()
                await rig.agent.host_requests.idle()
                counts.append(downloaded(rig).count("ca_keys"))
            assert counts == [1, 2, 3]

    run(scenario())


def test_in_pass_through_the_session_is_the_apps(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, mode="pass-through", sign_in=False) as rig:
            rig.host.chain_downloads = True
            await rig.agent.sender.sign_in()
            await rig.agent.host_requests.idle()
            assert downloaded(rig) == []

    run(scenario())
