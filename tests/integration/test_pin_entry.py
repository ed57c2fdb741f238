"""PIN_BLOCK and ENCRYPT (DESIGN.md section 5): the real driver against the module simulator on a
real pty and over socket://. The PIN blocks are checked with pycryptodome, not the project's DES;
the PIN itself is the simulator's test keypad."""

import threading

import pytest
from Crypto.Cipher import DES3

from agent.sim.module import TEST_PIN
from agent.wire.mac import mac_block, software_cup_mac
from agent.wire.pin import pin_of_format0, pin_pan
from drivers.module import Command, ModuleStatusError, Status
from tests.integration.module_rig import simulator_rig
from tests.integration.test_module_line import CLEAR, load

PAN = "6222021234567890123"


@pytest.fixture(params=["pty", "tcp"])
def rig(request, tmp_path):
    with simulator_rig(tmp_path, request.param) as rig:
        yield rig


def decrypt_pin(block: bytes, pan: str = PAN) -> str:
    clear = DES3.new(CLEAR["PIK"], DES3.MODE_ECB).decrypt(block)
    return pin_of_format0(clear, pin_pan(pan))


def test_pin_block_is_format_0_under_the_pik(rig) -> None:
    load(rig.module, layout=3)
    block = rig.module.pin_block(0, pin_pan(PAN), timeout=30)
    assert decrypt_pin(block) == TEST_PIN
    rig.sim.keypad.set("9876")
    assert decrypt_pin(rig.module.pin_block(0, pin_pan(PAN), timeout=30)) == "9876"


def test_cancel_and_keypad_timeout_are_cancelled(rig) -> None:
    load(rig.module)
    rig.sim.keypad.set("cancel")
    with pytest.raises(ModuleStatusError) as err:
        rig.module.pin_block(0, pin_pan(PAN), timeout=30)
    assert err.value.status == Status.CANCELLED
    rig.sim.keypad.set(TEST_PIN)
    rig.sim.keypad.delay = 1.5  # the cardholder is slower than the 1 s keypad timeout
    with pytest.raises(ModuleStatusError) as err:
        rig.module.pin_block(0, pin_pan(PAN), timeout=1)
    assert "cancelled (status 08)" in str(err.value)


def test_no_pik_is_key_absent(rig) -> None:
    with pytest.raises(ModuleStatusError) as err:
        rig.module.pin_block(0, pin_pan(PAN), timeout=30)
    assert err.value.status == Status.KEY_ABSENT


def test_macs_go_on_while_the_cardholder_types(rig) -> None:
    """A PIN entry leaves the line free: MACs are answered before the PIN block arrives."""
    load(rig.module)
    rig.sim.keypad.delay = 1.0
    order: list[str] = []
    blocks: list[bytes] = []

    def enter_pin() -> None:
        blocks.append(rig.module.pin_block(0, pin_pan(PAN), timeout=30))
        order.append("pin")

    typing = threading.Thread(target=enter_pin)
    typing.start()
    mab = b"\x02\x00" + bytes(range(64))
    while rig.sim.keypad.entries == 0 and typing.is_alive():
        threading.Event().wait(0.01)  # until the module has the PIN entry
    for _ in range(5):
        assert rig.module.mac_from_block(mac_block(mab)) == software_cup_mac(mab, CLEAR["MAK"])
        order.append("mac")
    typing.join(timeout=10)
    assert order == ["mac"] * 5 + ["pin"]
    assert decrypt_pin(blocks[0]) == TEST_PIN


def test_encrypt_is_ecb_under_the_tdk(rig) -> None:
    load(rig.module, layout=3)
    data = bytes(range(24))
    expected = DES3.new(CLEAR["TDK"], DES3.MODE_ECB).encrypt(data)
    assert rig.module.encrypt(0, data) == expected
    with pytest.raises(ValueError, match="multiple of 8"):
        rig.module.encrypt(0, bytes(7))


def test_encrypt_without_a_tdk_is_key_absent(rig) -> None:
    load(rig.module, layout=2)  # scheme 003: no TDK
    with pytest.raises(ModuleStatusError) as err:
        rig.module.encrypt(0, bytes(8))
    assert err.value.status == Status.KEY_ABSENT


def test_forward_returns_any_status(rig) -> None:
    assert rig.module.forward(Command.ENCRYPT, bytes([0, 0x01]) + bytes(8))[0] == (
        Status.BAD_PARAMETER
    )
    assert rig.module.forward(Command.PING, b"")[0] == Status.OK
