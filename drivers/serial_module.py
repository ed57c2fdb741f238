"""The card module over a serial line, on pyserial's ``serial_for_url``."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime

import serial

from drivers.framing import Frame
from drivers.link import ACK_TIMEOUT, QUIET, RETRANSMITS, Link, LinkDown, LinkStats, NoAck
from drivers.module import (
    KEY_NUMBERS,
    RESPONSE_BIT,
    CardModule,
    Command,
    KeyStatus,
    MacAlgorithm,
    ModuleInfo,
    ModuleLinkError,
    ModuleProtocolError,
    ModuleStatusError,
    ModuleTimeout,
    Status,
    decode_info,
    decode_key_status,
    decode_rtc,
)
from drivers.streams import SerialStream

# Total time a command may take, retransmissions and re-opening included.
DEFAULT_TIMEOUTS = {
    Command.PING: 1.0,
    Command.INFO: 1.0,
    Command.KEY_STATUS: 1.0,
    Command.RTC: 1.0,
    Command.LOAD_WORKING_KEYS: 3.0,
    Command.MAC: 1.5,
}
# The request goes out again (same SEQ: the module replays, never executes twice) when no
# response came this long after its ACK, e.g. because a noise byte looked like an ACK.
RESEND_AFTER = 0.5
BUSY_RETRIES = 3
BUSY_BACKOFF = 0.05
REOPEN_INTERVAL = 0.1


def _no_delay(port: serial.SerialBase) -> None:
    """Turn off Nagle on a socket:// port. The protocol writes single ACK bytes; with Nagle and
    delayed ACKs every MAC takes ~40 ms instead of ~0.2 ms. pyserial 3.5 has no public way to set
    it, so its socket attribute is used when present."""
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SerialCardModule(CardModule):
    """A card module behind ``url``: ``/dev/ttyS1``, a pty path, ``socket://host:port``...

    Thread-safe: one command at a time. A device that disappears (USB unplug) is re-opened on the
    next command without restarting the process.
    """

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 115200,
        ack_timeout: float = ACK_TIMEOUT,
        retransmits: int = RETRANSMITS,
        timeouts: dict[Command, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.baudrate = baudrate
        self.ack_timeout = ack_timeout
        self.retransmits = retransmits
        self.timeouts = {**DEFAULT_TIMEOUTS, **(timeouts or {})}
        self.stats = LinkStats()
        self._clock = clock
        self._port: serial.SerialBase | None = None
        self._link: Link | None = None
        self._lock = threading.Lock()
        # A random first SEQ: a restarted agent must not hit the module's replay of its last SEQ.
        self._seq = os.urandom(1)[0]

    # ----------------------------------------------------------------------------- connection

    def _open(self) -> Link:
        # Exclusive access to a real device: two agents on one module would steal each other's
        # bytes. URLs like socket:// have no such lock.
        exclusive = {"exclusive": True} if "://" not in self.url else {}
        port = serial.serial_for_url(
            self.url, baudrate=self.baudrate, timeout=QUIET, write_timeout=1.0, **exclusive
        )
        port.reset_input_buffer()
        _no_delay(port)
        self._port = port
        self._link = Link(
            SerialStream(port),
            ack_timeout=self.ack_timeout,
            retransmits=self.retransmits,
            stats=self.stats,
            clock=self._clock,
        )
        return self._link

    def _connected(self, deadline: float) -> Link:
        while self._link is None:
            try:
                return self._open()
            except (serial.SerialException, OSError, ValueError) as exc:
                if self._clock() + REOPEN_INTERVAL >= deadline:
                    raise ModuleLinkError(
                        f"card module at {self.url} cannot be opened: {exc}"
                    ) from None
                time.sleep(REOPEN_INTERVAL)
        return self._link

    def _drop_port(self) -> None:
        port, self._port, self._link = self._port, None, None
        if port is not None:
            # a vanished device may fail to close; there is nothing left to release then
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

    def close(self) -> None:
        with self._lock:
            self._drop_port()

    def __enter__(self) -> SerialCardModule:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------- exchange

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _transact(self, command: Command, data: bytes) -> bytes:
        """One request/response with a fresh SEQ; returns the response DATA (status first)."""
        budget = self.timeouts[command]
        deadline = self._clock() + budget
        request = Frame(self._next_seq(), command, data)

        def is_response(frame: Frame) -> bool:
            return frame.seq == request.seq and frame.cmd == command | RESPONSE_BIT

        lost: str | None = None
        while self._clock() < deadline:
            link = self._connected(deadline)
            try:
                link.send(request, answered=is_response, deadline=deadline)
                wait = min(deadline - self._clock(), RESEND_AFTER)
                response = link.receive(max(wait, 0.0), wanted=is_response)
            except NoAck as exc:
                if self._clock() >= deadline:
                    break
                if exc.naks:
                    # The module is there but a noisy line damaged every copy: the link has
                    # reported its error (DESIGN.md section 5); the command, with time left,
                    # goes again as a new request (new SEQ: all commands are idempotent).
                    request = Frame(self._next_seq(), command, data)
                    continue
                raise ModuleLinkError(
                    f"card module at {self.url} did not acknowledge {command.name} "
                    f"(seq {request.seq}) after {exc.transmissions} transmissions"
                ) from None
            except LinkDown as exc:
                self._drop_port()
                lost = str(exc)
                continue
            if response is not None:
                return response.data
        if lost is not None:
            raise ModuleLinkError(
                f"card module at {self.url} went away during {command.name}: {lost}"
            )
        raise ModuleTimeout(
            f"card module at {self.url} sent no response to {command.name} within {budget:.1f} s"
        )

    def _command(self, command: Command, data: bytes = b"") -> bytes:
        """Run ``command``, retrying while the module is busy; returns DATA after the status."""
        with self._lock:
            for attempt in range(BUSY_RETRIES + 1):
                payload = self._transact(command, data)
                if not payload:
                    raise ModuleProtocolError(f"{command.name} response has no status byte")
                status = payload[0]
                if status == Status.BUSY and attempt < BUSY_RETRIES:
                    time.sleep(BUSY_BACKOFF * (attempt + 1))
                    continue
                if status != Status.OK:
                    key = KEY_NUMBERS.get(payload[1]) if len(payload) > 1 else None
                    raise ModuleStatusError(
                        command, status, key if status == Status.KCV_MISMATCH else None
                    )
                return payload[1:]
        raise AssertionError("unreachable: the last attempt returns or raises")

    # ------------------------------------------------------------------------------- commands

    def ping(self) -> int:
        data = self._command(Command.PING)
        if len(data) != 4:
            raise ModuleProtocolError(f"PING response carries {len(data)} data bytes, expected 4")
        return int.from_bytes(data, "big")

    def info(self) -> ModuleInfo:
        return decode_info(self._command(Command.INFO))

    def key_status(self, slot: int = 0) -> KeyStatus:
        return decode_key_status(slot, self._command(Command.KEY_STATUS, bytes([slot])))

    def rtc(self) -> datetime:
        return decode_rtc(self._command(Command.RTC))

    def load_working_keys(self, slot: int, layout: int, field62: bytes) -> None:
        self._command(Command.LOAD_WORKING_KEYS, bytes([slot, layout]) + field62)

    def mac(self, slot: int, algorithm: MacAlgorithm, data: bytes) -> bytes:
        mac = self._command(Command.MAC, bytes([slot, algorithm]) + data)
        if len(mac) != 8:
            raise ModuleProtocolError(f"MAC response carries {len(mac)} data bytes, expected 8")
        return mac
