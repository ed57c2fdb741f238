"""Decoding never raises anything but DecodeError, whatever the bytes; valid messages round-trip.

A short run is part of the normal suite; POS_AGENT_FUZZ=long runs each target 20,000 times.
"""

import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.wire.errors import DecodeError
from agent.wire.frame import Header, Layout, Tpdu, decode_frame, host_frame
from agent.wire.message import Message, decode_message, encode_message
from tests.independent_iso8583 import decode_body
from tests.property.strategies import messages

LAYOUTS = [None, *Layout]
LONG = os.environ.get("POS_AGENT_FUZZ") == "long"
fuzz = settings(max_examples=20_000 if LONG else 300, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_error(data: bytes, layout: Layout | None) -> None:
    try:
        decode_frame(data, layout)
    except DecodeError as exc:
        assert 0 <= exc.offset <= len(data), f"offset {exc.offset} outside {len(data)} bytes"
        assert str(exc).startswith(f"at byte {exc.offset}")


@fuzz
@given(message=messages())
def test_valid_messages_round_trip(message: Message) -> None:
    encoded = encode_message(message)
    assert decode_message(encoded) == message


@fuzz
@given(message=messages())
def test_valid_messages_agree_with_independent_decoder(message: Message) -> None:
    decoded = decode_body(encode_message(message))
    assert decoded == {"mti": message.mti, "fields": message.fields}


@fuzz
@given(data=st.binary(max_size=600), layout=st.sampled_from(LAYOUTS))
@example(data=bytes.fromhex("0200FFFFFFFFFFFFFFFF"), layout=None)
@example(data=bytes.fromhex("0200400000000000000099"), layout=None)
@example(data=bytes.fromhex("0000"), layout=Layout.HOST)
def test_random_bytes_raise_only_decode_error(data: bytes, layout: Layout | None) -> None:
    _decode_or_error(data, layout)


@fuzz
@given(message=messages(), data=st.data())
def test_truncated_frames_are_decode_errors(message: Message, data: st.DataObject) -> None:
    frame = host_frame(encode_message(message), Tpdu(), Header())
    cut = data.draw(st.integers(0, len(frame) - 1))
    layout = data.draw(st.sampled_from(LAYOUTS))
    try:
        decode_frame(frame[:cut], layout)
    except DecodeError:
        return
    raise AssertionError(f"{cut} of {len(frame)} bytes decoded as {layout}")


@fuzz
@given(message=messages(), data=st.data())
def test_mutated_frames_raise_only_decode_error(message: Message, data: st.DataObject) -> None:
    frame = bytearray(host_frame(encode_message(message), Tpdu(), Header()))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(frame) - 1))
        frame[position] = data.draw(st.integers(0, 255))
    _decode_or_error(bytes(frame), data.draw(st.sampled_from(LAYOUTS)))
