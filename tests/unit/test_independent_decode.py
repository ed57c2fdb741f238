"""Frames from the wire layer decode identically in the independent decoder of the tests."""

import pytest

from agent.wire.builders import (
    Card,
    Terminal,
    echo_request,
    purchase_request,
    response_to,
    reversal_request,
    signin_request,
    signoff_request,
)
from agent.wire.frame import Header, Tpdu, host_frame
from agent.wire.mac import encode_with_mac, software_cup_mac
from agent.wire.message import Message, encode_message
from tests.independent_iso8583 import decode_host_frame

TERMINAL = Terminal("1234567", "898100012340001")  # a 7-character TID shows the space padding
CARD = Card(
    pan="6217001234567890123",
    expiry="2812",
    track2="6217001234567890123=28121010000000000",
    track3="996217001234567890123=1561560000000000000003000000114000028120=000000000000=000000000000=000000000",
    sequence_number="001",
    pin_block=bytes.fromhex("0123456789ABCDEF"),
    icc_data=bytes.fromhex(
        "9F2608AABBCCDDEEFF00119F2701809F101307010103A0A802010A010000000000ABCDEF12"
    ),
    entry_mode="051",
)
MAK = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")


def _mac(r: bytes) -> bytes:
    from agent.wire.mac import DesKey, cup_ecb_mac

    return cup_ecb_mac(r, DesKey(MAK).encrypt)


def _purchase() -> Message:
    return purchase_request(TERMINAL, stan=123, batch=7, amount_fen=1234, card=CARD)


def _messages() -> dict[str, tuple[Message, bytes]]:
    signin = signin_request(TERMINAL, stan=1, batch=7, scheme="004")
    signin_reply = response_to(
        signin,
        "00",
        {12: "235959", 13: "1125", 32: "48020000", 37: "000000012345", 62: bytes(range(60))},
    )
    purchase = _purchase()
    approved = response_to(
        purchase, "00", {12: "101112", 13: "1125", 15: "1125", 37: "123456789012", 38: "A1B2C3",
                         44: "0102030405 0607", 54: "1002156C000000012345", 63: "CUP银联"},
    )  # fmt: skip
    reversal = reversal_request(purchase, "98")
    built = {
        "0800": (signin, encode_message(signin)),
        "0810": (signin_reply, encode_message(signin_reply)),
        "0200": (purchase, encode_with_mac(purchase, _mac)),
        "0210": (approved, encode_with_mac(approved, _mac)),
        "0400": (reversal, encode_with_mac(reversal, _mac)),
        "0820 echo": (echo_request(TERMINAL, stan=9, batch=7), None),
        "0820 sign-off": (signoff_request(TERMINAL, stan=10, batch=7), None),
    }
    return {k: (m, b if b is not None else encode_message(m)) for k, (m, b) in built.items()}


def _expected(message: Message, encoded: bytes) -> dict[int, object]:
    expected: dict[int, object] = dict(message.fields)
    expected[41] = str(expected[41]).ljust(8)
    if 64 in expected:
        expected[64] = encoded[-8:]
    return expected


@pytest.mark.parametrize("name", list(_messages()))
def test_frame_decodes_identically_in_independent_decoder(name: str) -> None:
    message, encoded = _messages()[name]
    tpdu, header = Tpdu(destination=0x0003, source=0x0105), Header(processing_requirement=3)
    decoded = decode_host_frame(host_frame(encoded, tpdu, header))
    assert decoded["mti"] == message.mti
    assert decoded["fields"] == _expected(message, encoded)
    assert decoded["tpdu"] == {"dest": "0003", "src": "0105"}
    assert decoded["header"] == {
        "category": 0x60, "version": 0x31, "status": 0, "processing": 3, "sub_version": "311303",
    }  # fmt: skip


def test_mac_in_frames_is_the_software_mac_of_the_rest() -> None:
    for message, encoded in _messages().values():
        if 64 in message:
            assert encoded[-8:] == software_cup_mac(encoded[:-8], MAK)


def test_odd_length_numbers_are_padded_as_the_profile_says() -> None:
    # Entry mode (22) left-justified as real terminals send it: 051 is 05 10; card sequence
    # number (23) right-justified: 001 is 00 01; n..19 LL variable -> right pad.
    encoded = encode_message(Message("0200", {2: "123", 22: "051", 23: "001"}))
    assert encoded[10:] == bytes.fromhex("03123005100001")
