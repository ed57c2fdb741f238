"""Frames captured from real CUP terminals and hosts, and published MAC/KCV vectors.

They are the ground truth, ahead of our own simulators. ``tests/vectors`` holds a copy of
``../shared/vectors`` (sources named in each entry) so the suite runs from a clone alone; the copy
is checked against the shared one where that is present. ``tests/vectors/design.json`` holds the
worked examples DESIGN.md itself pins.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.sim.module import TEST_TMK, TEST_TUSN_KEY, ModuleSimulator, ModuleState
from agent.wire.frame import Layout, decode_frame, host_frame
from agent.wire.mac import (
    DesKey,
    cup_ecb_mac,
    kcv,
    mab,
    mac_block,
    mac_matches,
    software_cup_mac,
    tusn_ciphertext,
    x919_mac,
)
from agent.wire.message import encode_message
from agent.wire.working_keys import issue_working_keys
from drivers.framing import Frame as ModuleFrame
from drivers.module import Command, MacAlgorithm, decode_tusn_answer, encode_tusn_request
from tests.independent_iso8583 import decode_body, decode_host_frame

HERE = Path(__file__).resolve().parent.parent / "vectors"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "vectors"
CAPTURES = json.loads((HERE / "cup-captures.json").read_text(encoding="utf-8"))["cases"]
CRYPTO = json.loads((HERE / "crypto.json").read_text(encoding="utf-8"))
DESIGN = json.loads((HERE / "design.json").read_text(encoding="utf-8"))
TPDU_BYTES, HEADER_BYTES = 5, 6


def _raw(case: dict) -> bytes:
    return bytes.fromhex(case["frame"] if "frame" in case else case["message"])


def _ids(cases: list[dict]) -> list[str]:
    return [case["name"] for case in cases]


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/vectors beside this clone")
@pytest.mark.parametrize("name", ["cup-captures.json", "crypto.json"])
def test_the_copy_is_the_shared_ground_truth(name: str) -> None:
    assert (HERE / name).read_bytes() == (SHARED / name).read_bytes()


@pytest.mark.parametrize("case", CAPTURES, ids=_ids(CAPTURES))
def test_capture_decodes_to_its_expected_values(case: dict) -> None:
    layout = Layout.HOST if "frame" in case else Layout.BARE
    frame = decode_frame(_raw(case), layout)
    expect = dict(case["expect"])
    if "tpdu" in expect:
        assert frame.tpdu is not None and frame.tpdu.to_bytes().hex() == expect.pop("tpdu").lower()
    if "header" in expect:
        assert frame.header is not None
        assert frame.header.to_bytes().hex() == expect.pop("header").lower()
    assert frame.message.mti == expect.pop("mti")
    for number, value in expect.items():
        assert frame.message[int(number)] == value, f"field {number}"


@pytest.mark.parametrize("case", CAPTURES, ids=_ids(CAPTURES))
def test_capture_re_encodes_byte_for_byte(case: dict) -> None:
    raw = _raw(case)
    frame = decode_frame(raw)
    encoded = encode_message(frame.message)
    if frame.tpdu is not None:
        assert frame.header is not None
        assert host_frame(encoded, frame.tpdu, frame.header) == raw
    else:
        assert encoded == raw


@pytest.mark.parametrize("case", CAPTURES, ids=_ids(CAPTURES))
def test_capture_decodes_the_same_in_the_independent_decoder(case: dict) -> None:
    raw = _raw(case)
    ours = decode_frame(raw).message
    theirs = decode_host_frame(raw) if "frame" in case else decode_body(raw)
    assert theirs["mti"] == ours.mti
    assert theirs["fields"] == {n: v.ljust(8) if n == 41 else v for n, v in ours.fields.items()}


def test_captured_ic_entry_mode_is_left_justified() -> None:
    [qr] = [case for case in CAPTURES if "mac" in case]
    body = _raw(qr)[2 + TPDU_BYTES + HEADER_BYTES :]
    frame = decode_frame(_raw(qr))
    assert frame.message[22] == "030" and bytes.fromhex("0300") in body  # 030 is 03 00
    assert len(frame.message.text(60)) == 19


MAC_CASES = [case for case in CAPTURES if "mac" in case]


@pytest.mark.parametrize("case", MAC_CASES, ids=_ids(MAC_CASES))
def test_captured_mac_is_reproduced_in_software(case: dict) -> None:
    body = _raw(case)[2 + TPDU_BYTES + HEADER_BYTES :]
    key = bytes.fromhex(case["mac_key"])
    assert software_cup_mac(mab(body), key) == case["mac"].encode("ascii")
    assert mac_matches(body, lambda r: cup_ecb_mac(r, DesKey(key).encrypt))


@pytest.mark.parametrize("case", MAC_CASES, ids=_ids(MAC_CASES))
def test_captured_mac_is_reproduced_by_the_module_from_r(case: dict, tmp_path) -> None:
    """The agent's path: R computed here, the keyed step in the module (command 0x11, 0x81)."""
    key = bytes.fromhex(case["mac_key"])
    module = ModuleSimulator(ModuleState.load_or_create(tmp_path / "module.json"))
    field62 = issue_working_keys(TEST_TMK, 2, {"PIK": bytes(16), "MAK": key}).to_field62()
    loaded = module.handle(ModuleFrame(1, Command.LOAD_WORKING_KEYS, b"\x00\x02" + field62))
    assert loaded.data == b"\x00"
    r = mac_block(mab(_raw(case)[2 + TPDU_BYTES + HEADER_BYTES :]))
    answer = module.handle(ModuleFrame(2, Command.MAC, bytes([0, MacAlgorithm.CUP_ECB_FROM_R]) + r))
    assert answer.data == b"\x00" + case["mac"].encode("ascii")


@pytest.mark.parametrize("vector", CRYPTO["kcv"], ids=lambda v: v["kcv"])
def test_published_kcvs(vector: dict) -> None:
    assert kcv(bytes.fromhex(vector["key"])).hex().upper() == vector["kcv"]


@pytest.mark.parametrize("vector", CRYPTO["x9_9_des_cbc_mac"], ids=lambda v: v["mac"])
def test_published_x9_9_mac(vector: dict) -> None:
    data = vector["data_ascii"].encode("ascii")
    assert x919_mac(data, bytes.fromhex(vector["key"])).hex().upper() == vector["mac"]


@pytest.mark.parametrize("vector", CRYPTO["x9_19_mac"], ids=lambda v: v["mac"])
def test_published_x9_19_mac(vector: dict) -> None:
    data = bytes.fromhex(vector["data"])
    assert x919_mac(data, bytes.fromhex(vector["key"])).hex().upper() == vector["mac"]


@pytest.mark.parametrize("vector", CRYPTO["working_key_under_tmk"], ids=lambda v: v["clear"])
def test_published_working_key_decrypts_under_its_tmk(vector: dict) -> None:
    tmk = DesKey(bytes.fromhex(vector["tmk"]))
    assert tmk.decrypt(bytes.fromhex(vector["ciphertext"])).hex().upper() == vector["clear"]


@pytest.mark.parametrize("vector", DESIGN["tusn_ciphertext"], ids=lambda v: v["ciphertext"])
def test_published_tusn_ciphertext(vector: dict) -> None:
    key = bytes.fromhex(vector["key"])
    assert tusn_ciphertext(key, vector["tusn"], vector["factor"]) == vector["ciphertext"]


@pytest.mark.parametrize("vector", DESIGN["tusn_ciphertext"], ids=lambda v: v["ciphertext"])
def test_simulator_tusn_answer_is_the_published_construction(vector: dict, tmp_path) -> None:
    """The simulator's documented TUSN key is the vector's; its TUSN (``00009902`` + serial) is
    not, so its answer is the vector's construction over its own TUSN and the same factor."""
    module = ModuleSimulator(ModuleState.load_or_create(tmp_path / "module.json"))
    assert module.state.tusn_key == TEST_TUSN_KEY == bytes.fromhex(vector["key"])
    answer = module.handle(ModuleFrame(1, Command.TUSN, encode_tusn_request(vector["factor"])))
    assert answer.data[0] == 0
    tusn = decode_tusn_answer(answer.data[1:])
    assert tusn.ciphertext == tusn_ciphertext(TEST_TUSN_KEY, tusn.tusn, vector["factor"])
