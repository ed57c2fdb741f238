import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.framing import ACK, NAK, BadFrame, Control, Frame, FrameParser, crc16


def test_crc_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1  # the catalogued check value of CRC-16/CCITT-FALSE


def test_frame_bytes() -> None:
    raw = Frame(seq=0x21, cmd=0x00).encode()
    body = bytes([0x00, 0x02, 0x21, 0x00, 0x03])
    assert raw == bytes([0x02]) + body + crc16(body).to_bytes(2, "big")
    assert len(Frame(1, 0x11, bytes(10)).encode()) == 18  # a MAC request from R


def test_frame_body_limit() -> None:
    Frame(1, 1, bytes(1022)).encode()
    with pytest.raises(ValueError, match="exceeds LEN limit 1024"):
        Frame(1, 1, bytes(1023)).encode()


def test_noise_controls_and_split_frames() -> None:
    parser = FrameParser()
    a, b = Frame(1, 0x81, b"\x00abc"), Frame(2, 0x80, b"\x00")
    stream = b"\xff\x00\x55" + a.encode() + bytes([ACK]) + b.encode() + bytes([NAK])
    events = []
    for byte in stream:  # one byte at a time, as a slow line delivers them
        events += parser.feed(bytes([byte]))
    assert events == [a, Control(ACK), b, Control(NAK)]
    assert parser.noise_bytes == 3 and not parser.partial


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda raw: raw[:-1] + bytes([raw[-1] ^ 0x01]), "CRC"),
        (lambda raw: raw[:-3] + b"\x04" + raw[-2:], "where ETX belongs"),
        (lambda raw: raw[:1] + b"\x04\x01" + raw[3:], "LEN 1025 outside 2-1024"),
        (lambda raw: raw[:1] + b"\x00\x01" + raw[3:], "LEN 1 outside"),
    ],
)
def test_bad_frame_then_good_frame(mutate, reason: str) -> None:
    good = Frame(7, 0x82, b"\x00" + bytes(24))
    parser = FrameParser()
    events = parser.feed(mutate(Frame(6, 0x81, b"\x00xyz").encode()) + good.encode())
    bad = [e for e in events if isinstance(e, BadFrame)]
    assert bad and reason in bad[0].reason
    assert [e for e in events if isinstance(e, Frame)] == [good]


def test_expire_recovers_a_frame_behind_a_noise_stx() -> None:
    good = Frame(3, 0x80, b"\x00\x00\x00\x00\x01")
    parser = FrameParser()
    # a noise STX followed by the real frame: 0x02 0x02 0x00 reads as LEN 512, so it waits
    assert parser.feed(b"\x02" + good.encode()) == []
    assert parser.partial
    events = parser.expire()
    assert isinstance(events[0], BadFrame) and "truncated frame" in events[0].reason
    assert good in events and not parser.partial


def test_expire_of_a_half_frame() -> None:
    parser = FrameParser()
    parser.feed(Frame(1, 0x81, bytes(40)).encode()[:20])
    events = parser.expire()
    assert isinstance(events[0], BadFrame)
    assert not any(isinstance(e, Frame) for e in events)


frames = st.builds(
    Frame, seq=st.integers(0, 255), cmd=st.integers(0, 255), data=st.binary(max_size=60)
)


@settings(max_examples=300)
@given(parts=st.lists(st.tuples(st.binary(max_size=8), frames), max_size=6), cuts=st.data())
def test_frames_survive_noise_between_them(parts, cuts) -> None:
    stream = b"".join(noise + frame.encode() for noise, frame in parts)
    parser = FrameParser()
    events, position = [], 0
    while position < len(stream):
        step = cuts.draw(st.integers(1, 40))
        events += parser.feed(stream[position : position + step])
        position += step
    events += parser.expire()
    assert [e for e in events if isinstance(e, Frame)] == [frame for _, frame in parts]
