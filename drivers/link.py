"""Reliable frame exchange over a byte stream: ACK/NAK, retransmission, noise skipping.

Both ends of the card-module line use this: the driver to send requests, the simulator to send
responses. Every good frame received is acknowledged at once, a bad one is NAKed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from drivers.framing import ACK, NAK, BadFrame, Control, Frame, FrameParser

ACK_TIMEOUT = 0.2
RETRANSMITS = 3
# How long one read of the line waits (the granularity of the waits for an ACK or a response).
QUIET = 0.02
# A partial frame is dropped (and NAKed) once no byte of it has come for this long. A module
# writes a frame in one go, but its bytes may reach us in pieces: a USB-serial adapter hands them
# on at its latency timer (16 ms by default), a socket:// line at the network's pace. Under the
# sender's ACK wait, so a frame cut short is NAKed before the sender gives up on it.
PARTIAL_GAP = 0.1


class ByteStream(Protocol):
    def read(self, timeout: float) -> bytes:
        """Bytes available within ``timeout`` seconds (as soon as any arrive), else ``b""``."""

    def write(self, data: bytes) -> None: ...


class LinkDown(Exception):
    """The stream itself failed (device unplugged, connection closed)."""


class NoAck(Exception):
    """No ACK for a frame after every retransmission."""

    def __init__(self, frame: Frame, transmissions: int, naks: int = 0) -> None:
        self.frame = frame
        self.transmissions = transmissions
        self.naks = naks  # the peer is there, but our frames reached it damaged
        super().__init__(f"no ACK after {transmissions} transmissions ({naks} NAKed)")


@dataclass
class LinkStats:
    frames_sent: int = 0
    retransmits: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    bad_frames: int = 0
    last_bad_frame: str = ""


class Link:
    def __init__(
        self,
        stream: ByteStream,
        *,
        ack_timeout: float = ACK_TIMEOUT,
        retransmits: int = RETRANSMITS,
        stats: LinkStats | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.ack_timeout = ack_timeout
        self.retransmits = retransmits
        self.stats = stats or LinkStats()
        self._clock = clock
        self._parser = FrameParser()
        self._inbox: deque[Frame] = deque()
        self._last_byte_at = 0.0
        self._last_nak_at: float | None = None

    @property
    def noise_bytes(self) -> int:
        return self._parser.noise_bytes

    def transmit(self, frame: Frame) -> None:
        """Put ``frame`` on the line once; :meth:`send` with ``transmitted`` sees it through."""
        self._write(frame.encode())
        self.stats.frames_sent += 1

    def send(
        self,
        frame: Frame,
        answered: Callable[[Frame], bool] | None = None,
        deadline: float | None = None,
        *,
        transmitted: bool = False,
    ) -> None:
        """Send ``frame`` until the peer ACKs it; a received frame for which ``answered`` is true
        also proves delivery (its ACK was lost). Gives up at ``deadline`` (a clock value) or after
        the retransmits with :class:`NoAck`; a failed stream raises :class:`LinkDown`.
        ``transmitted``: its first transmission is on the line already (:meth:`transmit`)."""
        raw = frame.encode()
        transmissions = naks = 0
        while transmissions <= self.retransmits:
            if deadline is not None and self._clock() >= deadline:
                break
            if transmissions:
                self.stats.retransmits += 1
            if transmissions or not transmitted:
                self._write(raw)
                self.stats.frames_sent += 1
            transmissions += 1
            reply = self._await_ack(answered, deadline)
            if reply == ACK:
                return
            naks += reply == NAK
        raise NoAck(frame, transmissions, naks)

    def _await_ack(
        self, answered: Callable[[Frame], bool] | None, limit: float | None
    ) -> int | None:
        """ACK (or an answer proving delivery), NAK, or None when the ACK timeout passed."""
        deadline = self._clock() + self.ack_timeout
        if limit is not None:
            deadline = min(deadline, limit)
        while (remaining := deadline - self._clock()) > 0:
            for control in self._poll(remaining):
                if control in (ACK, NAK):
                    return control
            if answered is not None and any(answered(f) for f in self._inbox):
                return ACK
        return None

    def receive(
        self,
        timeout: float,
        wanted: Callable[[Frame], bool] | None = None,
        *,
        abandoned_after: float | None = None,
    ) -> Frame | None:
        """The next received frame (for which ``wanted`` is true; others are dropped), or ``None``
        after ``timeout`` seconds.

        With ``abandoned_after``, also ``None`` as soon as a frame received damaged (and NAKed)
        during this call was followed by that many seconds of silence: the peer retransmits at
        once on a NAK and within :data:`ACK_TIMEOUT` when the NAK is lost, so a silent line means
        it spent its retransmissions and gave the frame up."""
        start = self._clock()
        deadline = start + timeout
        while True:
            while self._inbox:
                frame = self._inbox.popleft()
                if wanted is None or wanted(frame):
                    return frame
            now = self._clock()
            remaining = deadline - now
            if abandoned_after is not None and self._gave_up(start, now, abandoned_after):
                return None
            if remaining <= 0:
                return None
            self._poll(remaining if abandoned_after is None else min(remaining, abandoned_after))

    def _gave_up(self, since: float, now: float, silence: float) -> bool:
        naked = self._last_nak_at
        return naked is not None and naked >= since and now - self._last_byte_at >= silence

    def _write(self, data: bytes) -> None:
        self.stats.bytes_out += len(data)
        self.stream.write(data)

    def _poll(self, timeout: float) -> list[int]:
        """Read once; ACK good frames into the inbox, NAK bad ones; return ACK/NAK bytes seen."""
        data = self.stream.read(min(timeout, QUIET))
        now = self._clock()
        if data:
            self.stats.bytes_in += len(data)
            self._last_byte_at = now
            events = self._parser.feed(data)
        elif self._parser.partial and now - self._last_byte_at >= PARTIAL_GAP:
            events = self._parser.expire()
        else:
            events = []
        controls = []
        for event in events:
            if isinstance(event, Frame):
                self._write(bytes([ACK]))
                self._inbox.append(event)
            elif isinstance(event, BadFrame):
                self.stats.bad_frames += 1
                self.stats.last_bad_frame = event.reason
                self._last_nak_at = now
                self._write(bytes([NAK]))
            elif isinstance(event, Control):
                controls.append(event.byte)
        return controls
