"""The simulator's command logic, without a line (the line is covered over real ptys)."""

import json
import os
from datetime import datetime

import pytest
from Crypto.Cipher import DES

from agent.sim.module import SM4_SLOT, TEST_SM4_TMK, TEST_TMK, ModuleSimulator, ModuleState
from agent.wire.mac import kcv, mac_block, software_cup_mac, x919_mac
from agent.wire.working_keys import LAYOUTS, issue_working_keys
from drivers.framing import Frame
from drivers.module import (
    Command,
    ModuleInfo,
    ModuleProtocolError,
    Status,
    decode_info,
    decode_key_status,
    decode_rtc,
    encode_info,
    encode_rtc,
)

CLEAR = {"PIK": bytes(range(1, 17)), "MAK": bytes(range(17, 33)), "TDK": bytes(range(33, 49))}


def clear_keys(layout: int) -> dict[str, bytes]:
    """Clear working keys of the lengths field 62 layout ``layout`` has."""
    return {name: CLEAR[name][:length] for name, length in LAYOUTS[layout].keys}


@pytest.fixture
def sim(tmp_path) -> ModuleSimulator:
    return ModuleSimulator(ModuleState.load_or_create(tmp_path / "state.json"))


def call(sim: ModuleSimulator, cmd: int, data: bytes = b"", seq: int = 1) -> bytes:
    response = sim.handle(Frame(seq, cmd, data))
    assert (response.seq, response.cmd) == (seq, cmd | 0x80)
    return response.data


def test_new_state_has_the_documented_test_tmk(tmp_path, sim) -> None:
    assert kcv(TEST_TMK).hex().upper() == "08D7B4FB"
    status = decode_key_status(0, call(sim, Command.KEY_STATUS, b"\x00")[1:])
    assert status["TMK"].present and status["TMK"].kcv_hex == "08D7B4FB"
    assert not status["MAK"].present
    assert os.stat(tmp_path / "state.json").st_mode & 0o777 == 0o600


def load_data(layout: int, slot: int = 0) -> bytes:
    """LOAD_WORKING_KEYS data: slot, layout, field 62 as a host of that layout sends it."""
    field62 = issue_working_keys(TEST_TMK, layout, clear_keys(layout)).to_field62()
    return bytes([slot, layout]) + field62


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_loaded_keys_report_the_kcvs_of_field_62(sim, layout: int) -> None:
    # the SM4 layout goes to the simulator's SM4 slot, under its TMK
    slot, tmk = (SM4_SLOT, TEST_SM4_TMK) if LAYOUTS[layout].sm4 else (0, TEST_TMK)
    issued = issue_working_keys(tmk, layout, clear_keys(layout))
    data = bytes([slot, layout]) + issued.to_field62()
    assert call(sim, Command.LOAD_WORKING_KEYS, data) == b"\x00"
    status = decode_key_status(slot, call(sim, Command.KEY_STATUS, bytes([slot]), seq=2)[1:])
    reported = {name: status[name].kcv_hex for name in issued.kcvs()}
    assert reported == issued.kcvs()
    assert {name: status[name].length for name in issued.kcvs()} == dict(LAYOUTS[layout].keys)
    assert status["TDK"].present is (LAYOUTS[layout].scheme in ("004", "006"))


@pytest.mark.parametrize("layout", [1, 4, 5, 6, 7])
def test_an_8_byte_mak_macs_with_single_des(sim, layout: int) -> None:
    call(sim, Command.LOAD_WORKING_KEYS, load_data(layout))
    mak, data = CLEAR["MAK"][:8], b"the MAB of some message"
    single = DES.new(mak, DES.MODE_ECB)  # an independent DES (pycryptodome)
    r = mac_block(data)
    h = r.hex().upper().encode()
    e1 = single.encrypt(h[:8])
    e2 = single.encrypt(bytes(a ^ b for a, b in zip(e1, h[8:], strict=True)))
    assert call(sim, Command.MAC, b"\x00\x01" + data, 2) == b"\x00" + e2.hex().upper()[:8].encode()


def test_layout_byte_and_length_must_agree(sim) -> None:
    good = load_data(6)
    assert call(sim, Command.LOAD_WORKING_KEYS, good[:1] + b"\x05" + good[2:]) == bytes(
        [Status.BAD_PARAMETER]
    )  # 40 bytes are not layout 5
    assert call(sim, Command.LOAD_WORKING_KEYS, good[:1] + b"\x09" + good[2:], seq=2) == bytes(
        [Status.BAD_PARAMETER]
    )  # no layout 9
    assert call(sim, Command.LOAD_WORKING_KEYS, b"\x00", seq=3) == bytes([Status.BAD_PARAMETER])


@pytest.mark.parametrize(("position", "key_number"), [(0, 1), (1, 2), (2, 3)])
def test_kcv_mismatch_names_the_key_and_stores_nothing(sim, position: int, key_number: int) -> None:
    issued = issue_working_keys(TEST_TMK, 3, clear_keys(3))
    raw = bytearray(issued.to_field62())
    raw[position * 20 + 16] ^= 0xFF  # first KCV byte of that key
    assert call(sim, Command.LOAD_WORKING_KEYS, b"\x00\x03" + bytes(raw)) == bytes([4, key_number])
    status = decode_key_status(0, call(sim, Command.KEY_STATUS, b"\x00", seq=2)[1:])
    assert not any(status[name].present for name in ("PIK", "MAK", "TDK"))


def test_load_errors(sim) -> None:
    assert call(sim, Command.LOAD_WORKING_KEYS, b"\x00\x02" + bytes(39)) == bytes(
        [Status.BAD_PARAMETER]
    )
    assert call(sim, Command.LOAD_WORKING_KEYS, load_data(2, slot=5), seq=2) == bytes(
        [Status.KEY_ABSENT]
    )


def test_macs(sim) -> None:
    call(sim, Command.LOAD_WORKING_KEYS, load_data(2))
    mak, data = CLEAR["MAK"], b"the MAB of some message"
    assert call(sim, Command.MAC, b"\x00\x01" + data, 2) == b"\x00" + software_cup_mac(data, mak)
    assert call(sim, Command.MAC, b"\x00\x02" + data, 3) == b"\x00" + x919_mac(data, mak)
    assert call(sim, Command.MAC, b"\x00\x81" + bytes(7), 4) == bytes([Status.BAD_PARAMETER])
    assert call(sim, Command.MAC, b"\x00\x33" + data, 5) == bytes([Status.BAD_PARAMETER])
    assert call(sim, Command.MAC, b"\x02\x01" + data, 6) == bytes([Status.KEY_ABSENT])


def test_repeated_request_is_replayed_not_executed(sim) -> None:
    first = sim.handle(Frame(9, Command.PING))
    executed = sim.executed
    assert sim.handle(Frame(9, Command.PING)) == first
    assert sim.executed == executed
    sim.handle(Frame(9, Command.INFO))  # same SEQ, another command: a new request
    assert sim.executed == executed + 1


def test_unknown_command_busy_and_tamper(sim) -> None:
    assert call(sim, 0x55) == bytes([Status.UNKNOWN_COMMAND])
    sim.busy_answers = 1
    assert call(sim, Command.PING, seq=2) == bytes([Status.BUSY])
    assert call(sim, Command.PING, seq=3)[0] == Status.OK
    sim.tampered = True
    assert call(sim, Command.KEY_STATUS, b"\x00", seq=4) == bytes([Status.TAMPERED])
    assert call(sim, Command.MAC, b"\x00\x81" + bytes(8), seq=5) == bytes([Status.TAMPERED])
    assert decode_info(call(sim, Command.INFO, seq=6)[1:]).tampered


def test_keys_persist_across_restarts(tmp_path, sim) -> None:
    issued = issue_working_keys(TEST_TMK, 2, clear_keys(2))
    call(sim, Command.LOAD_WORKING_KEYS, b"\x00\x02" + issued.to_field62())
    again = ModuleSimulator(ModuleState.load_or_create(tmp_path / "state.json"))
    status = decode_key_status(0, call(again, Command.KEY_STATUS, b"\x00")[1:])
    assert status["MAK"].kcv_hex == issued.kcvs()["MAK"]


def test_unreadable_state_names_the_file(tmp_path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"slots": {"0": {"TMK": "not hex"}}}))
    with pytest.raises(ValueError, match=f"module simulator state {path} is unreadable"):
        ModuleState.load_or_create(path)


def test_payload_codecs() -> None:
    info = ModuleInfo("SN1", "MODEL", "FW 2.1", True)
    assert decode_info(encode_info(info)) == info
    moment = datetime(2026, 11, 25, 13, 5, 9)
    assert encode_rtc(moment) == bytes.fromhex("20261125130509")
    assert decode_rtc(encode_rtc(moment)) == moment
    with pytest.raises(ModuleProtocolError, match="not a valid BCD time"):
        decode_rtc(bytes.fromhex("20261399999999"))
    with pytest.raises(
        ModuleProtocolError, match="INFO response carries 3 data bytes, expected 49"
    ):
        decode_info(b"abc")
    with pytest.raises(ModuleProtocolError, match="KEY_STATUS response carries 0 data bytes"):
        decode_key_status(0, b"")


def test_pin_block_and_encrypt_refuse_bad_parameters(sim) -> None:
    issued = issue_working_keys(TEST_TMK, 3, clear_keys(3))
    assert call(sim, Command.LOAD_WORKING_KEYS, bytes([0, 3]) + issued.to_field62()) == b"\x00"
    good = bytes([0, 0]) + b"987654321098" + bytes([30])
    assert call(sim, Command.PIN_BLOCK, good)[0] == Status.OK
    bad = {
        "slot 99": bytes([99]) + good[1:],
        "format 1": bytes([0, 1]) + good[2:],
        "11 PAN digits": good[:2] + b"98765432109" + bytes([30]),
        "letters": good[:2] + b"98765432109A" + bytes([30]),
        "timeout 0": good[:-1] + b"\x00",
    }
    for seq, (name, data) in enumerate(bad.items(), start=10):
        assert call(sim, Command.PIN_BLOCK, data, seq=seq) == bytes([Status.BAD_PARAMETER]), name
    assert call(sim, Command.ENCRYPT, bytes([0, 3]) + bytes(7), seq=20) == b"\x02"
    assert call(sim, Command.ENCRYPT, bytes([0, 2]) + bytes(8), seq=21) == b"\x02"  # MAK: no
    assert call(sim, Command.ENCRYPT, bytes([0, 3]), seq=22) == b"\x02"
    sim.tampered = True
    assert call(sim, Command.PIN_BLOCK, good, seq=23) == bytes([Status.TAMPERED])
