"""SM4 in the card module (DESIGN.md sections 4, 5 and 18): the KEY_STATUS family byte, layout 8,
the SM4 MAC, PIN format 0x01, ENCRYPT on an SM4 slot, and LOAD_TMK; the codecs and the simulator
without a line. Every SM4 value is checked with gmssl (tests/independent_sm4.py), the DES ones of
LOAD_TMK with pycryptodome: never with the code under test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from Crypto.Cipher import DES, DES3

from agent.sim.module import (
    SM4_SLOT,
    TEST_SM4_TMK,
    TEST_TMK,
    TEST_TRANSPORT_KEY,
    ModuleSimulator,
    ModuleState,
)
from agent.wire.mac import mab, mac_block
from agent.wire.pin import pin_of_format0
from agent.wire.working_keys import LAYOUTS, issue_working_keys, parse_field62
from drivers.framing import Frame
from drivers.module import (
    APP_COMMANDS,
    KEY_ORDER,
    Command,
    KeyFamily,
    KeyState,
    KeyStatus,
    MacAlgorithm,
    ModuleProtocolError,
    PinFormat,
    Status,
    TmkLoad,
    decode_key_status,
    decode_load_tmk,
    encode_key_status,
    encode_load_tmk,
    encode_pin_request,
)
from tests import independent_sm4 as gm

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
CAPTURES = json.loads((VECTORS / "cup-captures.json").read_text(encoding="utf-8"))["cases"]
[PURCHASE] = [case for case in CAPTURES if "mac" in case]  # a real captured 0200
TPDU_AND_HEADER = 2 + 5 + 6  # length, TPDU, header before the MTI
SM4_CLEAR = {
    "PIK": bytes.fromhex("11223344556677888877665544332211"),
    "MAK": bytes.fromhex("A1B2C3D4E5F60718293A4B5C6D7E8F90"),
    "TDK": bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0"),
}
PAN12 = "987654321098"


@pytest.fixture
def sim(tmp_path) -> ModuleSimulator:
    return ModuleSimulator(ModuleState.load_or_create(tmp_path / "state.json"))


def call(sim: ModuleSimulator, cmd: int, data: bytes = b"") -> bytes:
    seq = sim.executed & 0xFF  # a new SEQ for every call: never the replay of the last one
    response = sim.handle(Frame(seq, cmd, data))
    assert (response.seq, response.cmd) == (seq, cmd | 0x80)
    return response.data


def key_status(sim: ModuleSimulator, slot: int) -> KeyStatus:
    data = call(sim, Command.KEY_STATUS, bytes([slot]))
    assert data[0] == Status.OK
    return decode_key_status(slot, data[1:])


def load_sm4_keys(sim: ModuleSimulator) -> bytes:
    """Layout 8 into the SM4 slot, as a scheme 006 host issues it; returns its field 62."""
    field62 = issue_working_keys(TEST_SM4_TMK, 8, SM4_CLEAR).to_field62()
    assert call(sim, Command.LOAD_WORKING_KEYS, bytes([SM4_SLOT, 8]) + field62) == b"\x00"
    return field62


def purchase_mab() -> bytes:
    return mab(bytes.fromhex(PURCHASE["frame"])[TPDU_AND_HEADER:])


# ------------------------------------------------------------------------------------- codecs


def _status(family: KeyFamily) -> KeyStatus:
    keys = {name: KeyState(name, True, 16, bytes([i] * 4)) for i, name in enumerate(KEY_ORDER)}
    return KeyStatus(3, keys, family)


@pytest.mark.parametrize("family", list(KeyFamily))
def test_key_status_carries_the_family_byte(family: KeyFamily) -> None:
    encoded = encode_key_status(_status(family))
    assert len(encoded) == 25 and encoded[-1] == family
    assert decode_key_status(3, encoded) == _status(family)


def test_key_status_without_the_family_byte_is_des() -> None:
    """A module from before SM4 sends 24 bytes: its keys are DES/3DES."""
    old = encode_key_status(_status(KeyFamily.SM4))[:-1]
    decoded = decode_key_status(3, old)
    assert decoded.family is KeyFamily.DES
    assert decoded.keys == _status(KeyFamily.DES).keys


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (bytes(23), "KEY_STATUS response carries 23 data bytes, expected 25 (24 from a module"),
        (bytes(26), "KEY_STATUS response carries 26 data bytes, expected 25"),
        (bytes(24) + b"\x02", "KEY_STATUS response names key family 0x02, expected 0x00"),
    ],
)
def test_key_status_of_another_shape_is_a_protocol_error(data: bytes, text: str) -> None:
    with pytest.raises(ModuleProtocolError, match=text.replace("(", r"\(")):
        decode_key_status(0, data)


def test_pin_request_names_its_format() -> None:
    assert encode_pin_request(1, PAN12, 30, format=PinFormat.SM4) == (
        b"\x01\x01" + PAN12.encode() + b"\x1e"
    )
    assert encode_pin_request(0, PAN12, 30)[1] == PinFormat.ISO_FORMAT_0  # the default
    with pytest.raises(ValueError):
        encode_pin_request(0, PAN12, 30, format=7)  # type: ignore[arg-type]


def test_load_tmk_request_layout() -> None:
    load = TmkLoad(1, KeyFamily.SM4, bytes(range(16)), b"\xaa\xbb\xcc\xdd")
    encoded = encode_load_tmk(load)
    assert encoded == b"\x01\x01" + bytes(range(16)) + b"\xaa\xbb\xcc\xdd"
    assert decode_load_tmk(encoded) == load
    assert bytes(range(16)).hex() not in repr(load)  # ciphertext, but kept out of logs anyway
    for bad in (
        TmkLoad(1, KeyFamily.DES, bytes(8), bytes(4)),
        TmkLoad(1, KeyFamily.DES, bytes(16), bytes(3)),
    ):
        with pytest.raises(ValueError, match="LOAD_TMK: "):
            encode_load_tmk(bad)
    with pytest.raises(ValueError, match="carries 21 data bytes, expected 22"):
        decode_load_tmk(encoded[:-1])
    with pytest.raises(ValueError):
        decode_load_tmk(b"\x01\x05" + encoded[2:])  # no family 5


def test_load_tmk_is_never_the_apps() -> None:
    assert Command.LOAD_TMK == 0x15 and Command.LOAD_TMK not in APP_COMMANDS


# ---------------------------------------------------------------------- the independent SM4


def test_the_independent_sm4_meets_the_standard_and_the_project() -> None:
    assert gm.encrypt(gm.STANDARD_KEY, gm.STANDARD_KEY) == gm.STANDARD_CIPHERTEXT
    from agent.wire.mac import Sm4Key

    assert Sm4Key(gm.STANDARD_KEY).encrypt(gm.STANDARD_KEY) == gm.STANDARD_CIPHERTEXT


# -------------------------------------------------------------------------- layout 8, scheme 006


def test_layout_8_is_scheme_006_sm4_keys_under_the_tmk() -> None:
    issued = issue_working_keys(TEST_SM4_TMK, 8, SM4_CLEAR)
    raw = issued.to_field62()
    assert len(raw) == 60 == LAYOUTS[8].length
    parsed = parse_field62(raw, "006")  # recognised from the scheme and length alone
    assert parsed == issued and parsed.layout.number == 8
    for key in parsed.keys:
        assert gm.decrypt(TEST_SM4_TMK, key.ciphertext) == SM4_CLEAR[key.name]
        assert key.kcv == gm.kcv(SM4_CLEAR[key.name])
    assert "SM4" in LAYOUTS[8].describe()


# ----------------------------------------------------------------------------- the simulator


def test_new_state_has_an_sm4_slot_with_the_documented_tmk(sim) -> None:
    status = key_status(sim, SM4_SLOT)
    assert status.family is KeyFamily.SM4
    assert status["TMK"].kcv == gm.kcv(TEST_SM4_TMK) == bytes.fromhex("2677F46B")
    assert key_status(sim, 0).family is KeyFamily.DES
    assert key_status(sim, 0)["TMK"].kcv_hex == "08D7B4FB"


def test_layout_8_loads_into_the_sm4_slot_with_sm4_kcvs(sim) -> None:
    load_sm4_keys(sim)
    status = key_status(sim, SM4_SLOT)
    for name, clear in SM4_CLEAR.items():
        assert (status[name].present, status[name].length) == (True, 16)
        assert status[name].kcv == gm.kcv(clear)


def test_a_layout_of_the_other_family_is_a_bad_parameter(sim) -> None:
    sm4 = issue_working_keys(TEST_SM4_TMK, 8, SM4_CLEAR).to_field62()
    assert call(sim, Command.LOAD_WORKING_KEYS, bytes([0, 8]) + sm4) == b"\x02"
    des = issue_working_keys(TEST_TMK, 3, SM4_CLEAR).to_field62()
    assert call(sim, Command.LOAD_WORKING_KEYS, bytes([SM4_SLOT, 3]) + des) == b"\x02"
    assert not key_status(sim, SM4_SLOT)["MAK"].present


def test_layout_8_kcv_mismatch_names_the_key(sim) -> None:
    raw = bytearray(issue_working_keys(TEST_SM4_TMK, 8, SM4_CLEAR).to_field62())
    raw[20 + 16] ^= 0x01  # the MAK's KCV
    data = bytes([SM4_SLOT, 8]) + bytes(raw)
    assert call(sim, Command.LOAD_WORKING_KEYS, data) == bytes([Status.KCV_MISMATCH, 2])


def test_sm4_mac_of_a_real_purchase(sim) -> None:
    """The captured purchase's MAB under an SM4 MAK: 0x83 from R and 0x03 over the MAB give the
    MAC gmssl computes step by step."""
    load_sm4_keys(sim)
    message = purchase_mab()
    expected = gm.cup_mac(message, SM4_CLEAR["MAK"])
    r = mac_block(message, 16)
    from_r = call(sim, Command.MAC, bytes([SM4_SLOT, MacAlgorithm.SM4_FROM_R]) + r)
    assert from_r == b"\x00" + expected
    whole = call(sim, Command.MAC, bytes([SM4_SLOT, MacAlgorithm.SM4]) + message)
    assert whole == b"\x00" + expected


def test_mac_algorithms_of_the_other_family_are_bad_parameters(sim) -> None:
    load_sm4_keys(sim)
    message = purchase_mab()
    refused = {
        "0x81 on SM4": bytes([SM4_SLOT, 0x81]) + bytes(8),
        "0x01 on SM4": bytes([SM4_SLOT, 0x01]) + message,
        "0x02 on SM4": bytes([SM4_SLOT, 0x02]) + message,
        "0x83 with 8 bytes": bytes([SM4_SLOT, 0x83]) + bytes(8),
        "0x83 on DES": bytes([0, 0x83]) + bytes(16),
        "0x03 on DES": bytes([0, 0x03]) + message,
    }
    for name, data in refused.items():
        assert call(sim, Command.MAC, data) == bytes([Status.BAD_PARAMETER]), name


def test_sm4_pin_block_is_format_0_and_ff_under_the_pik(sim) -> None:
    load_sm4_keys(sim)
    sim.keypad.set("4711")
    request = encode_pin_request(SM4_SLOT, PAN12, 30, format=PinFormat.SM4)
    answer = call(sim, Command.PIN_BLOCK, request)
    assert answer[0] == Status.OK and len(answer) == 1 + 16
    clear = gm.decrypt(SM4_CLEAR["PIK"], answer[1:])
    assert clear[8:] == b"\xff" * 8
    assert pin_of_format0(clear[:8], PAN12) == "4711"


def test_pin_formats_of_the_other_family_are_bad_parameters(sim) -> None:
    load_sm4_keys(sim)
    format0_on_sm4 = encode_pin_request(SM4_SLOT, PAN12, 30)
    sm4_on_des = encode_pin_request(0, PAN12, 30, format=PinFormat.SM4)
    assert call(sim, Command.PIN_BLOCK, format0_on_sm4) == bytes([Status.BAD_PARAMETER])
    assert call(sim, Command.PIN_BLOCK, sm4_on_des) == bytes([Status.BAD_PARAMETER])


def test_encrypt_on_an_sm4_slot_takes_16_byte_blocks(sim) -> None:
    load_sm4_keys(sim)
    track = bytes(range(32))
    answer = call(sim, Command.ENCRYPT, bytes([SM4_SLOT, 3]) + track)
    assert answer == b"\x00" + gm.encrypt(SM4_CLEAR["TDK"], track)
    assert call(sim, Command.ENCRYPT, bytes([SM4_SLOT, 3]) + bytes(8)) == b"\x02"


# -------------------------------------------------------------------------------- LOAD_TMK


NEW_DES_TMK = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")
NEW_SM4_TMK = bytes.fromhex("00FFEEDDCCBBAA998877665544332211")


def under_transport_key(tmk: bytes) -> bytes:
    # The documented transport key's halves are equal: its 3DES is single DES under one half.
    assert TEST_TRANSPORT_KEY[:8] == TEST_TRANSPORT_KEY[8:]
    return DES.new(TEST_TRANSPORT_KEY[:8], DES.MODE_ECB).encrypt(tmk)


def des_kcv(key: bytes) -> bytes:
    return DES3.new(key, DES3.MODE_ECB).encrypt(bytes(8))[:4]


def load_tmk(sim: ModuleSimulator, slot: int, family: KeyFamily, tmk: bytes, kcv: bytes) -> bytes:
    load = TmkLoad(slot, family, under_transport_key(tmk), kcv)
    return call(sim, Command.LOAD_TMK, encode_load_tmk(load))


@pytest.mark.parametrize(
    ("slot", "family", "tmk", "kcv_of"),
    [
        (SM4_SLOT, KeyFamily.SM4, NEW_SM4_TMK, gm.kcv),
        (0, KeyFamily.DES, NEW_DES_TMK, des_kcv),
        (0, KeyFamily.SM4, NEW_SM4_TMK, gm.kcv),  # a slot may change family with its TMK
    ],
    ids=["sm4", "des", "des-slot-becomes-sm4"],
)
def test_load_tmk_stores_the_key_and_erases_the_working_keys(
    tmp_path, sim, slot: int, family: KeyFamily, tmk: bytes, kcv_of
) -> None:
    layout, old_tmk = (8, TEST_SM4_TMK) if slot == SM4_SLOT else (3, TEST_TMK)
    field62 = issue_working_keys(old_tmk, layout, SM4_CLEAR).to_field62()
    assert call(sim, Command.LOAD_WORKING_KEYS, bytes([slot, layout]) + field62) == b"\x00"
    assert load_tmk(sim, slot, family, tmk, kcv_of(tmk)) == b"\x00"
    status = key_status(sim, slot)
    assert (status.family, status["TMK"].kcv, status["TMK"].length) == (family, kcv_of(tmk), 16)
    assert not any(status[name].present for name in ("PIK", "MAK", "TDK"))
    # persisted, family and all
    again = ModuleSimulator(ModuleState.load_or_create(tmp_path / "state.json"))
    assert key_status(again, slot) == status
    # working keys of the new family load under the new TMK
    new_layout = 8 if family is KeyFamily.SM4 else 3
    field62 = issue_working_keys(tmk, new_layout, SM4_CLEAR).to_field62()
    assert call(again, Command.LOAD_WORKING_KEYS, bytes([slot, new_layout]) + field62) == b"\x00"


def test_load_tmk_with_the_wrong_kcv_changes_nothing(tmp_path, sim) -> None:
    load_sm4_keys(sim)
    before = key_status(sim, SM4_SLOT)
    wrong = bytes(b ^ 0x01 for b in gm.kcv(NEW_SM4_TMK))
    assert load_tmk(sim, SM4_SLOT, KeyFamily.SM4, NEW_SM4_TMK, wrong) == b"\x04"
    # the DES KCV of a key sent as SM4 is as wrong
    assert load_tmk(sim, SM4_SLOT, KeyFamily.SM4, NEW_SM4_TMK, des_kcv(NEW_SM4_TMK)) == b"\x04"
    assert key_status(sim, SM4_SLOT) == before
    assert NEW_SM4_TMK.hex().upper() not in (tmp_path / "state.json").read_text()


def test_load_tmk_without_a_transport_key_is_key_absent(tmp_path, sim) -> None:
    sim.state.transport_key = None
    sim.state.save()
    before = key_status(sim, 0)
    assert load_tmk(sim, 0, KeyFamily.DES, NEW_DES_TMK, des_kcv(NEW_DES_TMK)) == b"\x03"
    assert key_status(sim, 0) == before
    # the absence persists, as the TUSN key's does
    assert ModuleState.load_or_create(tmp_path / "state.json").transport_key is None


def test_load_tmk_bad_parameters(sim) -> None:
    good = encode_load_tmk(TmkLoad(0, KeyFamily.DES, bytes(16), bytes(4)))
    for name, data in {
        "short": good[:-1],
        "family 2": good[:1] + b"\x02" + good[2:],
        "slot 99": b"\x63" + good[1:],
    }.items():
        assert call(sim, Command.LOAD_TMK, data) == bytes([Status.BAD_PARAMETER]), name
    sim.tampered = True
    assert call(sim, Command.LOAD_TMK, good) == bytes([Status.TAMPERED])


# -------------------------------------------------------------------------------- the state


def test_state_file_records_families_and_the_transport_key(tmp_path, sim) -> None:
    raw = json.loads((tmp_path / "state.json").read_text())
    assert raw["families"] == {"0": "DES", "1": "SM4"}
    assert raw["transport_key"] == TEST_TRANSPORT_KEY.hex().upper()


def test_an_old_state_file_keeps_slot_0_des_and_gets_the_sm4_slot(tmp_path) -> None:
    path = tmp_path / "old.json"
    path.write_text(
        json.dumps(
            {
                "serial": "SIM0000000000001",
                "model": "POS-SIM-SM1",
                "firmware": "sim-1.0",
                "slots": {"0": {"TMK": TEST_TMK.hex().upper()}},
                "tusn_key": None,
            }
        )
    )
    state = ModuleState.load_or_create(path)
    assert state.slots == {0: {"TMK": TEST_TMK}, SM4_SLOT: {"TMK": TEST_SM4_TMK}}
    assert (state.family(0), state.family(SM4_SLOT)) == (KeyFamily.DES, KeyFamily.SM4)
    assert state.transport_key == TEST_TRANSPORT_KEY and state.tusn_key is None


def test_an_old_state_file_that_uses_slot_1_keeps_it_des(tmp_path) -> None:
    path = tmp_path / "old.json"
    slots = {"0": {"TMK": TEST_TMK.hex()}, "1": {"TMK": NEW_DES_TMK.hex()}}
    path.write_text(json.dumps({"serial": "S", "model": "M", "firmware": "F", "slots": slots}))
    state = ModuleState.load_or_create(path)
    assert state.slots[1] == {"TMK": NEW_DES_TMK} and state.family(1) is KeyFamily.DES


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"families": {"0": "AES"}}, "unreadable: 'AES'"),
        ({"transport_key": "0011"}, "transport_key is 2 bytes, a double-length 3DES key 16"),
    ],
)
def test_unreadable_families_or_transport_key(tmp_path, sim, change: dict, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ValueError, match=text):
        ModuleState.load_or_create(path)
