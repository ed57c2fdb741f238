"""SM4 and LOAD_TMK through the real driver: the module simulator on a real pty and over
socket://, a scripted module for what the simulator never sends. SM4 values are checked with
gmssl (tests/independent_sm4.py)."""

from __future__ import annotations

import pytest
from Crypto.Cipher import DES

from agent.sim.module import SM4_SLOT, TEST_SM4_TMK, TEST_TRANSPORT_KEY
from agent.wire.mac import mac_block
from agent.wire.pin import pin_of_format0
from agent.wire.working_keys import issue_working_keys
from drivers.framing import Frame
from drivers.module import (
    KeyFamily,
    ModuleProtocolError,
    ModuleStatusError,
    PinFormat,
    Status,
)
from drivers.serial_module import SerialCardModule
from tests import independent_sm4 as gm
from tests.integration.module_rig import ScriptedModule, ack, reply, simulator_rig
from tests.unit.test_module_sm4 import NEW_SM4_TMK, PAN12, SM4_CLEAR, purchase_mab


@pytest.fixture(params=["pty", "tcp"])
def rig(request, tmp_path):
    with simulator_rig(tmp_path, request.param) as rig:
        yield rig


def load_layout_8(module: SerialCardModule) -> None:
    issued = issue_working_keys(TEST_SM4_TMK, 8, SM4_CLEAR)
    module.load_working_keys(SM4_SLOT, 8, issued.to_field62())


def test_layout_8_mac_and_pin_through_the_driver(rig) -> None:
    module = rig.module
    assert module.key_status(SM4_SLOT).family is KeyFamily.SM4
    assert module.key_status(0).family is KeyFamily.DES
    load_layout_8(module)
    status = module.key_status(SM4_SLOT)
    assert {name: status[name].kcv for name in SM4_CLEAR} == {
        name: gm.kcv(key) for name, key in SM4_CLEAR.items()
    }
    # a real purchase's MAB: R of 16 bytes goes as 0x83, and the MAC is gmssl's
    message = purchase_mab()
    assert module.mac_from_block(mac_block(message, 16), SM4_SLOT) == gm.cup_mac(
        message, SM4_CLEAR["MAK"]
    )
    rig.sim.keypad.set("2468")
    block = module.pin_block(SM4_SLOT, PAN12, 30, format=PinFormat.SM4)
    clear = gm.decrypt(SM4_CLEAR["PIK"], block)
    assert len(block) == 16 and clear[8:] == b"\xff" * 8
    assert pin_of_format0(clear[:8], PAN12) == "2468"
    assert module.encrypt(SM4_SLOT, bytes(16)) == gm.encrypt(SM4_CLEAR["TDK"], bytes(16))


def test_the_other_familys_layout_mac_and_pin_are_refused(rig) -> None:
    module = rig.module
    field62 = issue_working_keys(TEST_SM4_TMK, 8, SM4_CLEAR).to_field62()
    with pytest.raises(ModuleStatusError, match=r"bad parameter \(status 02\)"):
        module.load_working_keys(0, 8, field62)
    load_layout_8(module)
    with pytest.raises(ModuleStatusError, match=r"bad parameter \(status 02\)"):
        module.mac_from_block(bytes(8), SM4_SLOT)  # 0x81 on an SM4 slot
    with pytest.raises(ModuleStatusError, match=r"bad parameter \(status 02\)"):
        module.pin_block(SM4_SLOT, PAN12, 30)  # format 0 on an SM4 slot
    with pytest.raises(ValueError, match="R is 8 bytes"):
        module.mac_from_block(bytes(12), SM4_SLOT)


def under_transport_key(tmk: bytes) -> bytes:
    # the documented transport key's halves are equal: its 3DES is DES under one half
    return DES.new(TEST_TRANSPORT_KEY[:8], DES.MODE_ECB).encrypt(tmk)


def test_load_tmk_through_the_driver(rig) -> None:
    module = rig.module
    load_layout_8(module)
    ciphertext = under_transport_key(NEW_SM4_TMK)
    with pytest.raises(ModuleStatusError) as err:
        module.load_tmk(SM4_SLOT, KeyFamily.SM4, ciphertext, bytes(4))
    assert (err.value.status, err.value.key) == (Status.KCV_MISMATCH, "TMK")
    assert "refused LOAD_TMK: KCV mismatch for TMK (status 04)" in str(err.value)
    assert module.key_status(SM4_SLOT)["MAK"].present  # nothing changed

    module.load_tmk(SM4_SLOT, KeyFamily.SM4, ciphertext, gm.kcv(NEW_SM4_TMK))
    status = module.key_status(SM4_SLOT)
    assert (status.family, status["TMK"].kcv) == (KeyFamily.SM4, gm.kcv(NEW_SM4_TMK))
    assert not status["MAK"].present  # the working keys went with the old TMK
    issued = issue_working_keys(NEW_SM4_TMK, 8, SM4_CLEAR)
    module.load_working_keys(SM4_SLOT, 8, issued.to_field62())

    rig.sim.state.transport_key = None
    with pytest.raises(ModuleStatusError, match=r"refused LOAD_TMK: key absent \(status 03\)"):
        module.load_tmk(SM4_SLOT, KeyFamily.SM4, ciphertext, gm.kcv(NEW_SM4_TMK))
    executed = rig.sim.executed
    with pytest.raises(ValueError, match="TMK ciphertext is 8 bytes"):
        module.load_tmk(0, KeyFamily.DES, bytes(8), bytes(4))  # refused before the line
    assert rig.sim.executed == executed


def _answering(data: bytes) -> tuple[ScriptedModule, SerialCardModule]:
    script = ScriptedModule(lambda e: [ack(), reply(e, data)] if isinstance(e, Frame) else [])
    return script, SerialCardModule(script.path)


def test_a_module_without_the_family_byte_is_read_as_des() -> None:
    old = b"\x00" + (b"\x01\x10" + bytes(4)) + (b"\x00\x00" + bytes(4)) * 3  # 24 bytes
    script, module = _answering(old)
    try:
        status = module.key_status(0)
        assert status.family is KeyFamily.DES and status["TMK"].present
    finally:
        module.close(), script.close()


def test_a_short_sm4_pin_block_is_a_protocol_error() -> None:
    script, module = _answering(b"\x00" + bytes(8))
    try:
        with pytest.raises(ModuleProtocolError, match="PIN_BLOCK response carries 8 data bytes"):
            module.pin_block(SM4_SLOT, PAN12, 1, format=PinFormat.SM4)
    finally:
        module.close(), script.close()
