import pytest

from agent.wire.errors import DecodeError
from agent.wire.frame import (
    CATEGORY_IC,
    Header,
    Layout,
    Tpdu,
    decode_frame,
    detect_layout,
    host_frame,
    with_length,
)
from agent.wire.message import Message, encode_message

MESSAGE = Message("0800", {11: "000001", 41: "10000001", 60: "00000001003"})
BODY = encode_message(MESSAGE)
TPDU = Tpdu(destination=0x0003, source=0x0105)
HEADER = Header(processing_requirement=3)


def test_tpdu_swaps_niis_for_the_response() -> None:
    assert TPDU.to_bytes() == bytes.fromhex("6000030105")
    assert TPDU.swapped() == Tpdu(destination=0x0105, source=0x0003)
    assert Tpdu.from_bytes(TPDU.swapped().to_bytes()) == TPDU.swapped()


def test_header_carries_status_and_processing_requirement() -> None:
    header = Header(software_version=0x32, terminal_status=1, processing_requirement=6)
    raw = header.to_bytes()
    assert raw == bytes.fromhex("603216311303")
    decoded = Header.from_bytes(raw)
    assert decoded == header
    assert decoded.processing_requirement_text == "TMS parameter download"
    assert Header().with_processing_requirement(3).to_bytes()[2] == 0x03


@pytest.mark.parametrize(
    "kwargs",
    [{"processing_requirement": 16}, {"terminal_status": -1}, {"sub_version": b"\x31\x13"},
     {"sub_version": "311303"}, {"software_version": 256}, {"category": 0x100}],
)  # fmt: skip
def test_header_rejects_values_that_do_not_fit(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Header(**kwargs)


def test_host_frame_round_trip() -> None:
    frame = decode_frame(host_frame(BODY, TPDU, HEADER))
    assert frame.layout is Layout.HOST
    assert (frame.tpdu, frame.header) == (TPDU, HEADER)
    assert frame.message.fields[41] == "10000001"


@pytest.mark.parametrize(
    ("data", "layout"),
    [
        (host_frame(BODY, TPDU, HEADER), Layout.HOST),
        (with_length(BODY), Layout.APP),
        (TPDU.to_bytes() + HEADER.to_bytes() + BODY, Layout.TPDU),
        (BODY, Layout.BARE),
    ],
)
def test_layout_is_detected(data: bytes, layout: Layout) -> None:
    assert detect_layout(data) is layout
    assert decode_frame(data).message == decode_frame(data, layout).message


def test_wrong_length_prefix_is_named() -> None:
    data = host_frame(BODY, TPDU, HEADER)
    with pytest.raises(DecodeError) as err:
        decode_frame(data[:-3])
    assert err.value.field == "length"
    assert "length prefix says" in str(err.value) and "at byte 0" in str(err.value)


def test_wrong_tpdu_id_is_named() -> None:
    data = bytearray(host_frame(BODY, TPDU, HEADER))
    data[2] = 0x61
    with pytest.raises(DecodeError, match=r"at byte 2, TPDU: TPDU id is 0x61"):
        decode_frame(bytes(data), Layout.HOST)


def test_a_response_header_sub_version_is_taken_as_bytes() -> None:
    # Hosts put anything there; it must not cost the link (DESIGN.md section 4).
    data = bytearray(host_frame(BODY, TPDU, HEADER))
    data[2 + 5 + 3] = 0xAB
    frame = decode_frame(bytes(data))
    assert frame.header is not None and frame.header.sub_version == bytes.fromhex("AB1303")
    assert frame.header.to_bytes() == bytes(data[7:13])


def test_ic_application_category() -> None:
    header = Header(category=CATEGORY_IC)
    assert header.to_bytes()[0] == 0x61
    assert Header.from_bytes(header.to_bytes()).category == 0x61


def test_offsets_count_from_the_start_of_the_frame() -> None:
    data = host_frame(BODY, TPDU, HEADER)
    with pytest.raises(DecodeError) as err:
        decode_frame(with_length(data[2:-2]))
    # field 60 starts after length 2 + TPDU 5 + header 6 + MTI 2 + bitmap 8 + 11 (3) + 41 (8)
    assert err.value.field == 60
    assert err.value.offset == 2 + 5 + 6 + 2 + 8 + 3 + 8 + 2


def test_frame_larger_than_length_field_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds the 2-byte length"):
        with_length(bytes(70_000))
