"""The module socket and SM4 (DESIGN.md section 5): the app's PIN_BLOCK in format 0x01 reaches the
module's SM4 slot and is journalled as every PIN entry is; LOAD_TMK is never the app's. Real Unix
socket, the module simulator on a real pty; the block is checked with gmssl."""

import asyncio
import json

from agent.sim.module import SM4_SLOT, TEST_SM4_TMK
from agent.wire.pin import pin_of_format0, pin_pan
from agent.wire.working_keys import issue_working_keys
from drivers.module import (
    Command,
    KeyFamily,
    PinFormat,
    Status,
    TmkLoad,
    encode_load_tmk,
    encode_pin_request,
)
from tests import independent_sm4 as gm
from tests.integration.gateway_rig import PAN, gateway_rig, module_command
from tests.unit.test_module_sm4 import SM4_CLEAR


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_sm4_pin_entry_is_forwarded_and_journalled(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            issued = issue_working_keys(TEST_SM4_TMK, 8, SM4_CLEAR)
            await asyncio.to_thread(
                rig.agent.module.load_working_keys, SM4_SLOT, 8, issued.to_field62()
            )
            rig.module_port.simulator.keypad.set("13579")
            request = encode_pin_request(SM4_SLOT, pin_pan(PAN), 30, format=PinFormat.SM4)
            answer = await module_command(rig.module_socket, Command.PIN_BLOCK, request, seq=9)
            assert answer[0] == Status.OK and len(answer) == 1 + 16
            clear = gm.decrypt(SM4_CLEAR["PIK"], answer[1:])
            assert pin_of_format0(clear[:8], pin_pan(PAN)) == "13579"
            assert clear[8:] == b"\xff" * 8
            # format 0 on the SM4 slot: the module's refusal reaches the app as it is
            format0 = encode_pin_request(SM4_SLOT, pin_pan(PAN), 30)
            refused = await module_command(rig.module_socket, Command.PIN_BLOCK, format0)
            assert refused == bytes([Status.BAD_PARAMETER])
            entries = [e for e in rig.agent.journal.events() if e["kind"] == "pin-entry"]
            assert [e["outcome"] for e in entries] == ["served", "status 02"]
            assert entries[0]["pan"] == "*" * 9 + pin_pan(PAN)[-3:]
            assert pin_pan(PAN)[-3:] in PAN[-4:]  # no digit the sale's row does not show
            assert answer[1:].hex() not in json.dumps(entries).lower()
            assert rig.agent.module_proxy.not_permitted == 0

    run(scenario())


def test_load_tmk_is_not_permitted_to_the_app(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            simulator = rig.module_port.simulator
            before = await asyncio.to_thread(rig.agent.module.key_status, SM4_SLOT)
            executed = simulator.executed
            data = encode_load_tmk(TmkLoad(SM4_SLOT, KeyFamily.SM4, bytes(16), bytes(4)))
            answer = await module_command(rig.module_socket, Command.LOAD_TMK, data)
            assert answer == bytes([Status.NOT_PERMITTED])
            assert simulator.executed == executed  # never reached the module
            assert rig.agent.module_proxy.not_permitted == 1
            after = await asyncio.to_thread(rig.agent.module.key_status, SM4_SLOT)
            assert after == before and after.family is KeyFamily.SM4

    run(scenario())
