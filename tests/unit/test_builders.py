import pytest
from Crypto.Cipher import DES3

from agent.wire.builders import (
    Card,
    Terminal,
    echo_request,
    purchase_request,
    response_mti,
    response_to,
    reversal_request,
    signin_request,
    signoff_request,
)
from agent.wire.errors import WireError
from agent.wire.mac import kcv
from agent.wire.working_keys import LAYOUTS, issue_working_keys, parse_field62

TERMINAL = Terminal("10000001", "898100012340001")
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


@pytest.mark.parametrize("scheme", ["001", "003", "004"])
def test_signin_carries_scheme_in_60_3(scheme: str) -> None:
    message = signin_request(TERMINAL, stan=42, batch=3, scheme=scheme)
    assert message.mti == "0800"
    assert message.fields == {
        11: "000042", 41: "10000001", 42: "898100012340001", 60: "00" "000003" + scheme, 63: "001",
    }  # fmt: skip


def test_signin_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="001, 003, 004"):
        signin_request(TERMINAL, stan=1, batch=1, scheme="002")


def test_echo_and_sign_off_are_0820_with_their_network_codes() -> None:
    assert echo_request(TERMINAL, stan=1, batch=1).text(60).endswith("301")
    assert signoff_request(TERMINAL, stan=1, batch=1).text(60).endswith("002")
    assert echo_request(TERMINAL, stan=1, batch=1).mti == "0820"


def test_purchase_fields() -> None:
    card = Card(pan="6217001234567890", track2="6217001234567890=2812", pin_block=bytes(8))
    message = purchase_request(TERMINAL, stan=7, batch=2, amount_fen=100, card=card)
    assert message.mti == "0200"
    assert message.text(3) == "000000" and message.text(4) == "000000000100"
    assert message.text(49) == "156" and message.text(60) == "22000002000"
    assert message.text(26) == "12" and message.binary(64) == bytes(8)
    assert 14 not in message and 55 not in message
    assert "6217" not in repr(card), "Card must not show card data in its repr"


@pytest.mark.parametrize("amount", [0, -1, 10**12])
def test_purchase_amount_range(amount: int) -> None:
    with pytest.raises(ValueError, match="amount"):
        purchase_request(TERMINAL, stan=1, batch=1, amount_fen=amount, card=Card(pan="1" * 16))


@pytest.mark.parametrize("stan", [0, 1_000_000])
def test_stan_range(stan: int) -> None:
    with pytest.raises(ValueError, match="STAN must be 1-999999"):
        echo_request(TERMINAL, stan=stan, batch=1)


def test_reversal_repeats_the_original_with_reason() -> None:
    original = purchase_request(
        TERMINAL,
        stan=55,
        batch=2,
        amount_fen=999,
        card=Card(pan="6217001234567890", pin_block=bytes(8)),
    )
    reversal = reversal_request(original, "98")
    assert reversal.mti == "0400"
    for number in (2, 3, 4, 11, 22, 25, 41, 42, 49, 60):
        assert reversal.fields[number] == original.fields[number]
    assert reversal.text(39) == "98"
    assert 52 not in reversal and 26 not in reversal, "a reversal carries no PIN"
    with pytest.raises(ValueError, match="reason"):
        reversal_request(original, "05")


def test_response_mti_and_echoes() -> None:
    assert [response_mti(m) for m in ("0200", "0400", "0800", "0820")] == [
        "0210", "0410", "0810", "0830",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not a request"):
        response_mti("0210")
    request = echo_request(TERMINAL, stan=3, batch=1)
    response = response_to(request, "00", {12: "120000"})
    assert response.mti == "0830"
    assert response.fields == {**request.fields, 39: "00", 12: "120000"}


# DESIGN.md section 4: the seven field 62 layouts of real hosts.
LAYOUT_TABLE = {
    1: ("001", 24, {"PIK": 8, "MAK": 8}),
    2: ("003", 40, {"PIK": 16, "MAK": 16}),
    3: ("004", 60, {"PIK": 16, "MAK": 16, "TDK": 16}),
    4: ("003", 32, {"PIK": 16, "MAK": 8}),
    5: ("004", 52, {"PIK": 16, "MAK": 8, "TDK": 16}),
    6: ("003", 40, {"PIK": 16, "MAK": 8}),
    7: ("004", 60, {"PIK": 16, "MAK": 8, "TDK": 16}),
}


@pytest.mark.parametrize("layout", sorted(LAYOUT_TABLE))
def test_field62_layouts_are_recognised_and_round_trip(layout: int) -> None:
    scheme, length, sizes = LAYOUT_TABLE[layout]
    clear = {name: bytes([i + 1]) * size for i, (name, size) in enumerate(sizes.items())}
    issued = issue_working_keys(TMK, layout, clear)
    raw = issued.to_field62()
    assert len(raw) == length == LAYOUTS[layout].length
    parsed = parse_field62(raw, scheme)  # recognised from scheme and length alone
    assert parsed == issued and parsed.layout.number == layout
    assert parsed == parse_field62(raw, scheme, layout)  # forced
    assert parsed.kcvs() == {name: kcv(clear[name]).hex().upper() for name in sizes}
    for key in parsed.keys:
        # decrypting under the TMK with an independent 3DES gives the clear key back
        assert DES3.new(TMK, DES3.MODE_ECB).decrypt(key.ciphertext) == clear[key.name]
        assert key.ciphertext.hex() not in repr(key)
    if layout in (6, 7):
        assert raw[20 + 8 : 20 + 16] == bytes(8)  # the 8-byte MAK's zero padding
        assert parsed.key("MAK").kcv == kcv(clear["MAK"])  # KCV of the single-length key


@pytest.mark.parametrize(("length", "scheme"), [(39, "003"), (44, "003"), (24, "004"), (40, "001")])
def test_field62_unknown_length_names_length_and_scheme(length: int, scheme: str) -> None:
    with pytest.raises(WireError, match=rf"field 62 .* is {length} bytes; scheme {scheme} has"):
        parse_field62(bytes(length), scheme)


def test_field62_forced_layout_must_fit() -> None:
    raw = issue_working_keys(TMK, 4, {"PIK": bytes(16), "MAK": bytes(8)}).to_field62()
    with pytest.raises(WireError, match=r"is 32 bytes; scheme 003 with 40 \(layout 2\)"):
        parse_field62(raw, "003", 2)
    with pytest.raises(WireError, match="layout 5 belongs to scheme 004, not 003"):
        parse_field62(raw, "003", 5)
    with pytest.raises(WireError, match="unknown key scheme '002'"):
        parse_field62(bytes(40), "002")
    with pytest.raises(WireError, match="unknown field 62 layout 9"):
        parse_field62(bytes(40), "003", 9)
