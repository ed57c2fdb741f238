"""Field 59: whatever the bytes, parsing raises only DecodeError, masking and describing never
raise and never show an A1; runs of usages round-trip byte for byte.

A short run is part of the normal suite; POS_AGENT_FUZZ=long runs each target 20,000 times.
"""

import json
import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.wire.describe import describe_field59
from agent.wire.errors import DecodeError
from agent.wire.field59 import Field59, Usage, a2_problem, parse_subusages
from agent.wire.mask import mask_field
from agent.wire.message import Message
from tests.property.strategies import a2_values, field59_values, usages

LONG = os.environ.get("POS_AGENT_FUZZ") == "long"
fuzz = settings(max_examples=20_000 if LONG else 300, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(items=st.lists(usages, max_size=6))
def test_usages_build_then_parse_to_themselves(items: list[Usage]) -> None:
    data = Field59(tuple(items)).to_bytes()
    assert Field59.parse(data).usages == tuple(items)


@fuzz
@given(data=field59_values)
def test_parse_then_build_is_byte_for_byte(data: bytes) -> None:
    assert Field59.parse(data).to_bytes() == data


@fuzz
@given(data=st.binary(max_size=1100))
@example(data=b"A1016")
@example(data=b"A2005" + b"01009")
@example(data=b"A" * 1000)
def test_any_bytes_parse_or_raise_decode_error_only(data: bytes) -> None:
    try:
        parsed = Field59.parse(data)
    except DecodeError as exc:
        assert 0 <= exc.offset <= len(data)
        assert str(exc).startswith(f"at byte {exc.offset}, field 59")
    else:
        assert parsed.to_bytes() == data
    for usage in ("A2", "A5"):
        try:
            parse_subusages(data, usage)
        except DecodeError as exc:
            assert 0 <= exc.offset <= len(data)
    problem = a2_problem(data)
    assert problem is None or problem.startswith("A2")
    mask_field(59, data)
    json.dumps(describe_field59(data))


@fuzz
@given(value=a2_values)
def test_the_a2_builder_makes_well_formed_a2(value: bytes) -> None:
    # the TUSN goes as the module gives it, whatever its layout: what was reported to CUP
    assert a2_problem(value, tusn_layout=False) is None


@fuzz
@given(
    before=st.lists(usages, max_size=3),
    pin=st.binary(min_size=16, max_size=16),
    after=st.lists(usages, max_size=3),
    cut=st.integers(0, 40),
)
def test_an_sm4_pin_block_is_never_shown(
    before: list[Usage], pin: bytes, after: list[Usage], cut: int
) -> None:
    items = [u for u in before + after if u.tag != "A1" or u.value != pin]
    data = Field59((*items[: len(before)], Usage("A1", pin), *items[len(before) :])).to_bytes()
    for field in (data, data[: max(len(data) - cut, 0)]):
        message = Message("0200", {59: field})
        shown = " ".join(
            (mask_field(59, field), repr(message), json.dumps(describe_field59(field)))
        )
        assert pin.hex().upper() not in shown.upper()
        assert pin.hex().upper() not in shown.upper().replace(" ", "")
        if len(set(pin)) > 4 and pin.isascii() and pin.decode().isprintable():
            assert pin.decode() not in shown
