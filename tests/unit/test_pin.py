"""ISO 9564-1 format 0 against the published example (Wikipedia, "ISO 9564": PIN 1234, PAN
43219876543210987 -> 0412AC89ABCDEF67) and its refusals."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.wire.pin import PinError, format0, pin_of_format0, pin_pan

PAN = "43219876543210987"


def test_published_example() -> None:
    assert pin_pan(PAN) == "987654321098"
    assert format0("1234", pin_pan(PAN)).hex().upper() == "0412AC89ABCDEF67"
    assert pin_of_format0(bytes.fromhex("0412AC89ABCDEF67"), pin_pan(PAN)) == "1234"


@given(
    st.text("0123456789", min_size=4, max_size=12), st.text("0123456789", min_size=13, max_size=19)
)
def test_round_trip(pin: str, pan: str) -> None:
    assert pin_of_format0(format0(pin, pin_pan(pan)), pin_pan(pan)) == pin


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (lambda: pin_pan("123456789012"), "no 12 digits"),
        (lambda: format0("123", "987654321098"), "4 to 12 digits"),
        (lambda: format0("12a4", "987654321098"), "4 to 12 digits"),
        (lambda: pin_of_format0(bytes(7), "987654321098"), "8 bytes"),
        # the right block for another PAN does not decode as format 0
        (lambda: pin_of_format0(format0("1234", "987654321098"), "111111111111"), "format 0"),
    ],
)
def test_refusals(call, text: str) -> None:
    with pytest.raises(PinError, match=text):
        call()
