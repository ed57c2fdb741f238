"""Runs a :class:`~agent.sim.module.ModuleSimulator` on a pty or a TCP listener, in a thread,
with line faults (noise, dropped bytes, slow replies), garbage injection and unplug/replug."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import tty
from pathlib import Path

from agent.sim.module import ModuleSimulator
from drivers.framing import Frame
from drivers.link import Link, LinkDown, NoAck
from drivers.streams import FaultyStream, FdStream, LineFaults, SocketStream

POLL = 0.05
PLUG_WAIT = 2.0


class SimulatedModulePort:
    """The simulator's end of the line.

    Only the serving thread opens and closes the line, so no file descriptor is closed under a
    reader and reused by the next pty. Unplug and replug are requests it carries out at once, even
    in the middle of a slow reply.

    With a pty, ``link_path`` (if given) is a symlink to the current pty, re-pointed on replug the
    way udev keeps a stable name for a USB device; the path to open is :attr:`path`.
    """

    def __init__(
        self,
        simulator: ModuleSimulator,
        *,
        faults: LineFaults | None = None,
        delay: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.simulator = simulator
        self.faults = faults or LineFaults()
        self.delay = delay
        self.path = ""
        self._seed = seed
        self._lock = threading.Lock()  # guards the stream against inject() during a close
        self._stream: FaultyStream | None = None
        self._fds: tuple[int, ...] = ()
        self._listener: socket.socket | None = None
        self._link_path: Path | None = None
        self._want_plugged = True
        self._wake = threading.Event()
        self._settled = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------------------------- starting

    def start_pty(self, link_path: Path | None = None) -> str:
        self._link_path = link_path
        self._plug_pty()
        return self._start()

    def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen for one driver at a time; returns the ``socket://`` URL to open."""
        listener = socket.create_server((host, port))
        listener.settimeout(POLL)
        self._listener = listener
        bound_host, bound_port = listener.getsockname()[:2]
        self.path = f"socket://{bound_host}:{bound_port}"
        return self._start()

    def _start(self) -> str:
        self._thread = threading.Thread(target=self._serve, name="module-sim", daemon=True)
        self._thread.start()
        return self.path

    # ------------------------------------------------------------------ unplug and replug

    def unplug(self) -> None:
        """Pull the cable: the pty closes (its path disappears) or the TCP connection drops, and
        the driver's next read or write fails."""
        self._request_plug(False)

    def replug(self) -> None:
        """Plug back in: a new pty behind the same link path, or accept TCP connections again."""
        self._request_plug(True)

    def _request_plug(self, plugged: bool) -> None:
        self._settled.clear()
        self._want_plugged = plugged
        self._wake.set()
        if not self._settled.wait(PLUG_WAIT):
            raise RuntimeError("the simulator thread did not carry out the unplug/replug")

    def _settle_plug(self) -> None:
        """In the serving thread: make the line match what was asked for."""
        if not self._wake.is_set():
            return
        self._wake.clear()
        if not self._want_plugged:
            self._close_line()
        elif self._stream is None and self._listener is None:
            self._plug_pty()
        self._settled.set()

    def _plug_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        # The simulator holds the slave open too, so the master does not see EIO every time the
        # driver closes its end; it never reads from it.
        self._fds = (master, slave)
        with self._lock:
            self._stream = FaultyStream(FdStream(master), self.faults, self._seed)
        pty_path = os.ttyname(slave)
        if self._link_path is None:
            self.path = pty_path
            return
        temporary = self._link_path.with_name(self._link_path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        temporary.symlink_to(pty_path)
        os.replace(temporary, self._link_path)
        self.path = str(self._link_path)

    def _close_line(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if self._link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._link_path.unlink()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = ()
        if stream is not None and isinstance(stream.inner, SocketStream):
            stream.inner.sock.close()

    def inject(self, raw: bytes) -> None:
        """Put ``raw`` on the line towards the driver, outside any frame (line garbage)."""
        with self._lock:
            if self._stream is not None:
                with contextlib.suppress(LinkDown):
                    self._stream.inner.write(raw)

    # ---------------------------------------------------------------------------- serving

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            connection, _ = self._listener.accept()
        except TimeoutError:
            return
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._stream = FaultyStream(SocketStream(connection), self.faults, self._seed)

    def _serve(self) -> None:
        link: Link | None = None
        # PIN entries waiting for the simulated cardholder: (when to answer, request). The module
        # serves other commands meanwhile, as a real one does.
        typing: list[tuple[float, Frame]] = []
        while not self._stop.is_set():
            self._settle_plug()
            stream = self._stream
            if stream is None:
                link, typing = None, []
                if self._listener is not None and self._want_plugged:
                    self._accept()
                else:
                    self._wake.wait(POLL)
                continue
            if link is None or link.stream is not stream:
                link, typing = Link(stream), []
            try:
                now = time.monotonic()
                due = [entry for entry in typing if entry[0] <= now]
                if due:
                    typing.remove(due[0])
                    self._answer(link, due[0][1])
                    continue
                wait = min([POLL] + [at - now for at, _ in typing])
                request = link.receive(wait)
                if request is None:
                    continue
                if any(request == pending for _, pending in typing):
                    continue  # the same PIN entry again: the cardholder is still typing
                if keypad := self.simulator.begin(request):
                    typing.append((now + keypad, request))
                    continue
                self._answer(link, request)
            except NoAck:
                continue  # the driver asks again if it still wants it; the answer is replayed
            except LinkDown:
                # The TCP driver went away: accept the next one. (A pty master does not fail
                # while the simulator holds the slave; should it, the module is gone until replug.)
                self._close_line()

    def _answer(self, link: Link, request: Frame) -> None:
        response = self.simulator.handle(request)
        if self.delay and self._wake.wait(self.delay):
            return  # unplugged while "working": the answer is lost with the power
        # A new request (another SEQ) proves the driver is done with this response.
        link.send(response, answered=lambda f, seq=request.seq: f.seq != seq)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=PLUG_WAIT)
        self._close_line()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> SimulatedModulePort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
