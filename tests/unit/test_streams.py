"""The driver's byte stream on a real pty (the terminal's line is a tty too), and on a port
without a descriptor (loop://), which goes through pyserial."""

from __future__ import annotations

import contextlib
import os
import pty
import time
from collections.abc import Iterator

import pytest
import serial

from drivers.link import LinkDown
from drivers.streams import SerialStream


@pytest.fixture
def line() -> Iterator[tuple[int, serial.Serial]]:
    """The module's end (a pty master) and the driver's port on the other end, raw."""
    master, slave = pty.openpty()
    port = serial.Serial(os.ttyname(slave), timeout=0.02, write_timeout=0.2)
    os.close(slave)
    try:
        yield master, port
    finally:
        port.close()
        with contextlib.suppress(OSError):  # closed by the test already
            os.close(master)


def test_bytes_cross_the_line_both_ways(line) -> None:
    master, port = line
    stream = SerialStream(port)
    stream.write(b"\x02request\x03")
    assert os.read(master, 64) == b"\x02request\x03"
    os.write(master, b"\x06\x02answer\x03")
    received = b""
    while len(received) < 9:
        received += stream.read(0.5)
    assert received == b"\x06\x02answer\x03"


def test_a_quiet_line_reads_nothing_after_the_timeout(line) -> None:
    _, port = line
    started = time.monotonic()
    assert SerialStream(port).read(0.05) == b""
    assert time.monotonic() - started >= 0.04


def test_a_vanished_device_is_link_down(line) -> None:
    master, port = line
    os.close(master)  # what an unplugged USB adapter looks like from the port
    with pytest.raises(LinkDown):
        SerialStream(port).read(0.5)


def test_a_line_that_takes_no_bytes_is_link_down_after_the_write_timeout(line) -> None:
    """Nobody reads the other end: once the tty's buffers are full the write waits for the
    port's write timeout, then says so (never blocks the driver's lock for good)."""
    _, port = line
    stream = SerialStream(port)
    started = time.monotonic()
    with pytest.raises(LinkDown, match=r"took no byte for 0\.2 s"):
        for _ in range(1000):
            stream.write(bytes(4096))
    assert 0.15 <= time.monotonic() - started < 5


def test_a_port_without_a_descriptor_goes_through_pyserial() -> None:
    port = serial.serial_for_url("loop://", timeout=0.02)
    try:
        stream = SerialStream(port)
        stream.write(b"\x02echo\x03")
        assert stream.read(0.5) == b"\x02echo\x03"
        assert stream.read(0.02) == b""
    finally:
        port.close()
