"""Runs a :class:`~drivers.simulator.ModuleSimulator` on a pty or a TCP listener, in a thread,
with line faults (noise, dropped bytes, slow replies) and unplug/replug."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import tty
from pathlib import Path

from drivers.link import Link, LinkDown, NoAck
from drivers.simulator import ModuleSimulator
from drivers.streams import FaultyStream, FdStream, LineFaults, SocketStream

POLL = 0.05


class SimulatedModulePort:
    """The simulator's end of the line.

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
        self._seed = seed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stream: FaultyStream | None = None
        self._fds: tuple[int, int] | None = None  # pty master, slave
        self._listener: socket.socket | None = None
        self._link_path: Path | None = None
        self.path = ""

    # ------------------------------------------------------------------------------- pty

    def start_pty(self, link_path: Path | None = None) -> str:
        self._link_path = link_path
        self._plug()
        return self._start()

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        # The simulator holds the slave open too, so the master does not see EIO every time the
        # driver closes its end; it never reads from it.
        with self._lock:
            self._fds = (master, slave)
            self._stream = FaultyStream(FdStream(master), self.faults, self._seed)
        pty_path = os.ttyname(slave)
        if self._link_path is not None:
            temporary = self._link_path.with_name(self._link_path.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            temporary.symlink_to(pty_path)
            os.replace(temporary, self._link_path)
            self.path = str(self._link_path)
        else:
            self.path = pty_path

    def unplug(self) -> None:
        """Pull the cable: close the pty (its path disappears) or drop the TCP connection. The
        driver's next read or write fails."""
        with self._lock:
            fds, self._fds, stream, self._stream = self._fds, None, self._stream, None
        if self._link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._link_path.unlink()
        for fd in fds or ():
            with contextlib.suppress(OSError):
                os.close(fd)
        if stream is not None and isinstance(stream.inner, SocketStream):
            stream.inner.sock.close()

    def replug(self) -> None:
        """Plug the pty back in (same :attr:`path` when a link path is used); a TCP listener
        simply accepts the driver's next connection."""
        if self._fds is None and self._listener is None:
            self._plug()

    # ------------------------------------------------------------------------------- TCP

    def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen for one driver at a time; returns the ``socket://`` URL to open."""
        listener = socket.create_server((host, port))
        listener.settimeout(POLL)
        self._listener = listener
        bound_host, bound_port = listener.getsockname()[:2]
        self.path = f"socket://{bound_host}:{bound_port}"
        return self._start()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            connection, _ = self._listener.accept()
        except TimeoutError:
            return
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._stream = FaultyStream(SocketStream(connection), self.faults, self._seed)

    # ---------------------------------------------------------------------------- serving

    def _start(self) -> str:
        self._thread = threading.Thread(target=self._serve, name="module-sim", daemon=True)
        self._thread.start()
        return self.path

    def _serve(self) -> None:
        link: Link | None = None
        stream: FaultyStream | None = None
        while not self._stop.is_set():
            with self._lock:
                current = self._stream
            if current is None:
                if self._listener is not None:
                    self._accept()
                else:
                    time.sleep(POLL)
                link = None
                continue
            if current is not stream:
                stream, link = current, Link(current)
            assert link is not None
            try:
                request = link.receive(POLL)
                if request is None:
                    continue
                response = self.simulator.handle(request)
                if self.delay:
                    time.sleep(self.delay)
                # A new request (another SEQ) proves the driver is done with this response.
                link.send(response, answered=lambda f, seq=request.seq: f.seq != seq)
            except NoAck:
                continue  # the driver asks again if it still wants it; the answer is replayed
            except LinkDown:
                self._lost(current)

    def _lost(self, stream: FaultyStream) -> None:
        """The line failed under us: a TCP driver went away (accept the next), or we unplugged."""
        with self._lock:
            if self._stream is stream and self._listener is not None:
                self._stream = None
                if isinstance(stream.inner, SocketStream):
                    stream.inner.sock.close()
        time.sleep(POLL)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.unplug()

    def __enter__(self) -> SimulatedModulePort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
