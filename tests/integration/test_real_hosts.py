"""What real hosts do differently, over real sockets with the module simulator on a real pty:
every field 62 layout of DESIGN.md section 4, a host that checks the batch (77), and the reversal
answers that close a reversal without confirming it (12/25, and 22 as a conflict)."""

import asyncio
import contextlib
import sqlite3

import pytest

from agent.host.signin import SignInError
from agent.sim.module import SM4_SLOT
from agent.wire.message import Message
from agent.wire.working_keys import LAYOUTS
from tests.integration.gateway_rig import TID, app_purchase, exchange, gateway_rig


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_host_of_each_layout_signs_in_and_the_purchase_is_approved(tmp_path, layout) -> None:
    shape = LAYOUTS[layout]
    slot = SM4_SLOT if shape.sm4 else 0  # layout 8's SM4 keys go under the SM4 TMK

    async def scenario():
        sections = {"wire": {"key_scheme": shape.scheme}, "module": {"key_slot": slot}}
        async with gateway_rig(tmp_path, sign_in=False, sections=sections) as rig:
            rig.host.set_key_layout(layout)
            await rig.agent.sender.sign_in()
            assert rig.host.state()["sessions"][TID] == {"scheme": shape.scheme, "layout": layout}
            status = await asyncio.to_thread(rig.agent.module.key_status, slot)
            assert {name: status[name].length for name in shape.names} == dict(shape.keys)
            assert rig.agent.journal.last_signin()["kcvs"] == {
                name: status[name].kcv_hex for name in shape.names
            }
            response = await exchange(rig.socket, app_purchase(1234))
            # the host verified the request's MAC (A0 otherwise), the agent the response's
            assert response.text(39) == "00", response
            assert rig.host.state()["mac_failures"] == 0
            [purchase] = rig.host.state()["purchases"].values()
            assert not purchase["reversed"]
            [signed] = [e for e in rig.agent.journal.events() if e["kind"] == "signed-in"]
            assert signed["layout"] == layout

    run(scenario())


def test_a_forced_layout_that_does_not_fit_names_length_scheme_and_setting(tmp_path) -> None:
    async def scenario():
        sections = {"wire": {"key_layout": 2}}
        async with gateway_rig(tmp_path, sign_in=False, sections=sections) as rig:
            rig.host.set_key_layout(4)  # 32 bytes: PIK 16, MAK 8
            with pytest.raises(SignInError) as err:
                await rig.agent.sender.sign_in()
            text = str(err.value)
            assert "field 62 (working keys) is 32 bytes; scheme 003 with 40 (layout 2)" in text
            assert "wire.key_layout = 2" in text
            [row] = rig.agent.journal.transactions()
            assert row["state"] == "failed"

    run(scenario())


def test_a_host_that_checks_the_batch_gets_its_batch_and_77_recovers_once(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            rig.host.batch, rig.host.check_batch = 42, True
            await rig.agent.sender.sign_in()
            assert rig.agent.journal.batch == 42  # 60.2 of the 0810
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            rig.host.batch = 43  # the host closed the batch: every 0200 of 42 now gets 77
            response = await exchange(rig.socket, app_purchase(2000, app_stan=902))
            assert response.text(39) == "00"
            assert rig.agent.journal.batch == 43
            state = rig.host.state()
            assert state["requests"]["0800"] == 2, "one sign-in for the 77, no loop"
            batches = sorted(key.split("/")[1] for key in state["purchases"])
            assert batches == ["000042", "000043"]
            [plan] = [e for e in rig.agent.journal.events() if e["kind"] == "recovery.plan"]
            assert plan["remedies"][0] == "sign-in"
            # an app that sends its own 60 still gets the current batch in 60.2
            own = app_purchase(3000, app_stan=903)
            own.fields[60] = "22000001"
            assert (await exchange(rig.socket, own)).text(39) == "00"
            assert "000043" in [key.split("/")[1] for key in rig.host.state()["purchases"]]

    run(scenario())


def _reversal_rows(rig) -> list[str]:
    """The states of the journal's reversal rows, read from the SQLite file itself."""
    with contextlib.closing(sqlite3.connect(rig.config.journal.path)) as db:
        return [row[0] for row in db.execute("SELECT state FROM reversals ORDER BY id")]


def test_a_reversal_of_nothing_is_closed_by_25(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.queue_reversal("123456", 1500)  # the host never saw it
            assert await rig.agent.reversals.send() == 1
            # closed, and kept apart from a confirmed one: a late approval of the original
            # would prove the host answered 25 before the original reached it
            assert _reversal_rows(rig) == ["nothing-to-reverse"]
            [event] = [e for e in rig.agent.journal.events() if e["kind"] == "reversal-confirmed"]
            assert event["outcome"] == "nothing-to-reverse"
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"

    run(scenario())


def test_a_reversal_the_host_disputes_is_closed_as_a_conflict(tmp_path, caplog) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            [key] = rig.host.state()["purchases"]
            rig.queue_reversal(key.split("/")[2], 9900)  # same STAN, another amount
            assert await rig.agent.reversals.send() == 1
            assert _reversal_rows(rig) == ["conflict"]
            kinds = [e["kind"] for e in rig.agent.journal.events()]
            assert "reversal-conflict" in kinds
            assert not rig.agent.journal.has_queued_reversals  # sales go on
            [purchase] = rig.host.state()["purchases"].values()
            assert not purchase["reversed"]
            assert (await exchange(rig.socket, app_purchase(2000, app_stan=902))).text(39) == "00"

    run(scenario())
    assert "closed as a conflict" in caplog.text


def test_an_encoded_sign_in_response_keeps_its_batch_in_60(tmp_path) -> None:
    from agent.host.signin import host_batch

    assert host_batch(Message("0810", {60: "00000042003"})) == 42
    assert host_batch(Message("0810", {60: "0000"})) is None
    assert host_batch(Message("0810", {})) is None
