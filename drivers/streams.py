"""Byte streams under :class:`drivers.link.Link`: a pyserial port for the driver, a pty master or
a TCP connection for the simulator, and a wrapper that injects line faults."""

from __future__ import annotations

import os
import random
import select
import socket
from dataclasses import dataclass

import serial

from drivers.link import LinkDown

READ_MAX = 4096  # bytes taken per read: more than any frame of the protocol


class FdStream:
    """A file descriptor: a serial device or pty the driver's port opened, a pty master of the
    simulator. A descriptor opened non-blocking (pyserial opens ports so) waits for a full
    output buffer up to ``write_timeout`` seconds (None: as long as it takes)."""

    def __init__(self, fd: int, write_timeout: float | None = None) -> None:
        self.fd = fd
        self.write_timeout = write_timeout

    def read(self, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            data = os.read(self.fd, READ_MAX) if ready else None
        except BlockingIOError:  # readable, then taken by nobody else: nothing after all
            return b""
        except (OSError, ValueError) as exc:
            raise LinkDown(str(exc)) from None
        if data is None:
            return b""
        if not data:  # what a vanished device (USB unplug) or a closed pty does
            raise LinkDown("the port reports data but has none: device gone")
        return data

    def write(self, data: bytes) -> None:
        """All of ``data``."""
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(self.fd, view) :]
                except BlockingIOError:
                    _, ready, _ = select.select([], [self.fd], [], self.write_timeout)
                    if not ready:
                        waited = f"{self.write_timeout} s"
                        raise LinkDown(f"the port took no byte for {waited}") from None
        except (OSError, ValueError) as exc:
            raise LinkDown(str(exc)) from None


class SerialStream:
    """A pyserial port: a device, a pty, socket://, loop://, whatever serial_for_url opens.

    pyserial opens and configures the port. On a POSIX device or pty (the terminal's line) the
    bytes then move through its descriptor (:class:`FdStream`): pyserial's own read and write
    build timeout objects, select once more per write and ask the driver for the bytes
    waiting, about half of the driver's CPU per MAC (issue 26). Other ports (socket://,
    loop://) have no descriptor and go through pyserial."""

    def __init__(self, port: serial.SerialBase) -> None:
        self.port = port
        posix = isinstance(port, serial.Serial)
        self._fd = FdStream(port.fd, port.write_timeout) if posix else None

    def read(self, timeout: float) -> bytes:
        if self._fd is not None:
            return self._fd.read(timeout)
        try:
            if self.port.timeout != timeout:
                self.port.timeout = timeout
            first = self.port.read(1)
            if not first:
                return b""
            waiting = self.port.in_waiting
            return first + (self.port.read(waiting) if waiting else b"")
        except (serial.SerialException, OSError) as exc:
            raise LinkDown(str(exc)) from None

    def write(self, data: bytes) -> None:
        if self._fd is not None:
            return self._fd.write(data)
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise LinkDown(str(exc)) from None


class SocketStream:
    """A connected TCP socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read(self, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return b""
            data = self.sock.recv(4096)
        except (OSError, ValueError) as exc:
            raise LinkDown(str(exc)) from None
        if not data:
            raise LinkDown("connection closed by the peer")
        return data

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (OSError, ValueError) as exc:
            raise LinkDown(str(exc)) from None


@dataclass
class LineFaults:
    """Faults on the line, changeable while it runs: each byte, in either direction, is replaced
    by a random one with probability ``noise`` and lost with probability ``drop``."""

    noise: float = 0.0
    drop: float = 0.0


class FaultyStream:
    def __init__(self, inner: FdStream | SocketStream, faults: LineFaults, seed: int | None = None):
        self.inner = inner
        self.faults = faults
        self._random = random.Random(seed)

    def _damage(self, data: bytes) -> bytes:
        noise, drop = self.faults.noise, self.faults.drop
        if not (noise or drop):
            return data
        out = bytearray()
        for byte in data:
            roll = self._random.random()
            if roll < drop:
                continue
            out.append(self._random.randrange(256) if roll < drop + noise else byte)
        return bytes(out)

    def read(self, timeout: float) -> bytes:
        return self._damage(self.inner.read(timeout))

    def write(self, data: bytes) -> None:
        self.inner.write(self._damage(data))
