"""TUSN (DESIGN.md sections 5 and 17): the command's payload codecs, every malformed answer named,
and the simulator's answer under its documented TUSN key."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.sim.module import TEST_TUSN_KEY, ModuleSimulator, ModuleState
from agent.wire.mac import tusn_ciphertext
from drivers.framing import Frame
from drivers.module import (
    APP_COMMANDS,
    Command,
    ModuleProtocolError,
    Status,
    TusnAnswer,
    decode_info,
    decode_tusn_answer,
    encode_tusn_answer,
    encode_tusn_request,
)

EXAMPLE = TusnAnswer("02", "0000020254004318", "D60AF15D")  # section 17's worked example
# device type, TUSN length 16, TUSN, ciphertext
EXAMPLE_DATA = b"02" + bytes([16]) + b"0000020254004318" + b"D60AF15D"


# ----------------------------------------------------------------------------------- request


def test_request_is_the_six_ascii_digits() -> None:
    assert encode_tusn_request("000052") == b"000052"
    assert Command.TUSN == 0x14 and Command.TUSN in APP_COMMANDS


@pytest.mark.parametrize(
    "factor",
    ["00005", "0000522", "", "00005A", "0000 2", "٠٠٠٠٥٢"],  # the last: Arabic-Indic digits
    ids=["5-digits", "7-digits", "empty", "letter", "space", "non-ascii-digits"],
)
def test_request_refuses_anything_but_six_ascii_digits(factor: str) -> None:
    with pytest.raises(ValueError, match="a TUSN random factor is 6 ASCII digits"):
        encode_tusn_request(factor)


# ------------------------------------------------------------------------------------ answer


def test_answer_layout_and_round_trip() -> None:
    assert encode_tusn_answer(EXAMPLE) == EXAMPLE_DATA
    assert decode_tusn_answer(EXAMPLE_DATA) == EXAMPLE


@given(
    device_type=st.text("0123456789", min_size=2, max_size=2),
    tusn=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=50),
    ciphertext=st.text("0123456789ABCDEF", min_size=8, max_size=8),
)
def test_any_well_formed_answer_round_trips(device_type: str, tusn: str, ciphertext: str) -> None:
    answer = TusnAnswer(device_type, tusn, ciphertext)
    assert decode_tusn_answer(encode_tusn_answer(answer)) == answer


def _with(
    *,
    device_type: bytes = b"02",
    tusn: bytes = b"0000020254004318",
    length: int | None = None,
    ciphertext: bytes = b"D60AF15D",
) -> bytes:
    """The example's answer DATA with one part changed (the length byte follows the TUSN)."""
    return device_type + bytes([len(tusn) if length is None else length]) + tusn + ciphertext


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "TUSN response carries 0 data bytes, fewer than the 11 of device type, TUSN length"),
        (
            EXAMPLE_DATA[:10],
            "TUSN response carries 10 data bytes, fewer than the 11 of device type, TUSN length",
        ),
        (
            EXAMPLE_DATA[:-1],
            "TUSN response carries 26 data bytes, expected 27 for a TUSN of 16 characters",
        ),
        (
            EXAMPLE_DATA + b"0",
            "TUSN response carries 28 data bytes, expected 27 for a TUSN of 16 characters",
        ),
        (
            _with(length=200),
            "TUSN response carries 27 data bytes, expected 211 for a TUSN of 200 characters",
        ),
        (_with(tusn=b""), "TUSN response: TUSN is 0 characters, expected 1 to 50"),
        (_with(tusn=b"1" * 51), "TUSN response: TUSN is 51 characters, expected 1 to 50"),
        (_with(device_type=b"0\xb2"), "TUSN response: device type has a non-ASCII byte 0xB2"),
        (_with(tusn=b"00000202\xe95400431"), "TUSN response: TUSN has a non-ASCII byte 0xE9"),
        (_with(ciphertext=b"D60AF15\xc4"), "TUSN response: ciphertext has a non-ASCII byte 0xC4"),
        (_with(device_type=b"0A"), "TUSN response: device type '0A' is not 2 ASCII digits"),
        (_with(device_type=b" 2"), "TUSN response: device type ' 2' is not 2 ASCII digits"),
        (
            _with(tusn=b"0000020254\x00004318"),
            r"TUSN response: TUSN '0000020254\\x00004318' is not printable ASCII",
        ),
        (
            _with(ciphertext=b"d60af15d"),
            "TUSN response: ciphertext 'd60af15d' is not 8 upper-case hex characters",
        ),
        (
            _with(ciphertext=b"D60AF15G"),
            "TUSN response: ciphertext 'D60AF15G' is not 8 upper-case hex characters",
        ),
    ],
    ids=[
        "empty",
        "shorter-than-the-fixed-parts",
        "one-byte-short",
        "one-byte-long",
        "length-byte-beyond-the-data",
        "empty-tusn",
        "tusn-over-50",
        "device-type-non-ascii",
        "tusn-non-ascii",
        "ciphertext-non-ascii",
        "device-type-letter",
        "device-type-space",
        "tusn-control-character",
        "ciphertext-lower-case",
        "ciphertext-not-hex",
    ],
)
def test_malformed_answer_is_a_protocol_error_that_says_what(data: bytes, message: str) -> None:
    with pytest.raises(ModuleProtocolError, match=f"^{message}"):
        decode_tusn_answer(data)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (TusnAnswer("2", "0000020254004318", "D60AF15D"), "device type '2' is not 2 ASCII"),
        (TusnAnswer("02", "", "D60AF15D"), "TUSN is 0 characters"),
        (TusnAnswer("02", "0000020254004318é", "D60AF15D"), "TUSN '0000020254004318é' is not"),
        (TusnAnswer("02", "0000020254004318", "D60AF15"), "ciphertext 'D60AF15' is not 8"),
    ],
)
def test_encoder_refuses_what_the_decoder_would(answer: TusnAnswer, message: str) -> None:
    with pytest.raises(ValueError, match=f"^TUSN answer: {message}"):
        encode_tusn_answer(answer)


# --------------------------------------------------------------------------------- simulator


@pytest.fixture
def sim(tmp_path) -> ModuleSimulator:
    return ModuleSimulator(ModuleState.load_or_create(tmp_path / "state.json"))


def call(sim: ModuleSimulator, data: bytes, seq: int = 1) -> bytes:
    response = sim.handle(Frame(seq, Command.TUSN, data))
    assert (response.seq, response.cmd) == (seq, Command.TUSN | 0x80)
    return response.data


def test_simulator_answers_with_its_documented_tusn_and_key(sim) -> None:
    data = call(sim, b"000052")
    assert data[0] == Status.OK
    answer = decode_tusn_answer(data[1:])
    serial = decode_info(sim.handle(Frame(2, Command.INFO)).data[1:]).serial
    assert answer.device_type == "02"
    assert answer.tusn == "00009902" + serial == "00009902SIM0000000000001"
    assert answer.ciphertext == tusn_ciphertext(TEST_TUSN_KEY, answer.tusn, "000052")
    # pinned for independent test hosts, which know only the documented key and TUSN
    assert answer.ciphertext == "0C3E1C9E"


def test_simulator_tusn_is_the_serial_without_padding(sim) -> None:
    sim.state.serial = "SN42"
    answer = decode_tusn_answer(call(sim, b"123456")[1:])
    assert answer.tusn == "00009902SN42"
    assert answer.ciphertext == tusn_ciphertext(TEST_TUSN_KEY, "00009902SN42", "123456")


@pytest.mark.parametrize(
    "factor",
    [b"00005", b"0000522", b"", b"00005A", "٠٠٠٠٥٢".encode()],
    ids=["5-digits", "7-digits", "empty", "letter", "non-ascii-digits"],
)
def test_simulator_refuses_a_factor_that_is_not_six_ascii_digits(sim, factor: bytes) -> None:
    assert call(sim, factor) == bytes([Status.BAD_PARAMETER])


def test_simulator_without_a_tusn_key_answers_key_absent(sim) -> None:
    sim.state.tusn_key = None
    assert call(sim, b"000052") == bytes([Status.KEY_ABSENT])
    assert call(sim, b"00005", seq=2) == bytes([Status.BAD_PARAMETER])  # the request first


def test_tampered_simulator_computes_no_ciphertext(sim) -> None:
    sim.tampered = True
    assert call(sim, b"000052") == bytes([Status.TAMPERED])


def test_tusn_key_persists_and_old_state_files_get_the_documented_one(tmp_path, sim) -> None:
    path = tmp_path / "state.json"
    assert json.loads(path.read_text())["tusn_key"] == TEST_TUSN_KEY.hex().upper()
    sim.state.tusn_key = None
    sim.state.save()
    assert ModuleState.load_or_create(path).tusn_key is None
    old = json.loads(path.read_text())
    del old["tusn_key"]  # a state file written before the TUSN key
    path.write_text(json.dumps(old))
    assert ModuleState.load_or_create(path).tusn_key == TEST_TUSN_KEY
    old["tusn_key"] = "0011"
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="unreadable: tusn_key is 2 bytes, an SM4 key 16"):
        ModuleState.load_or_create(path)
