"""Test rigs for the card module: the simulator on a pty or TCP port, and a scripted module for
misbehaviour the simulator does not produce. Both are real ptys/sockets; nothing is mocked."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import tempfile
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.sim.module import ModuleSimulator, ModuleState
from agent.sim.module_port import SimulatedModulePort
from drivers.framing import ACK, Control, Frame, FrameParser
from drivers.serial_module import SerialCardModule


@dataclass
class Rig:
    sim: ModuleSimulator
    port: SimulatedModulePort
    module: SerialCardModule


@contextlib.contextmanager
def simulator_rig(tmp_path: Path, transport: str = "pty", seed: int = 1):
    sim = ModuleSimulator(ModuleState.load_or_create(tmp_path / "state.json"))
    port = SimulatedModulePort(sim, seed=seed)
    path = port.start_pty(tmp_path / "module") if transport == "pty" else port.start_tcp()
    module = SerialCardModule(path)
    try:
        yield Rig(sim, port, module)
    finally:
        module.close()
        port.stop()


VANISH = object()  # action: close the pty, as a module that loses power
Action = bytes | float | object
Behaviour = Callable[[Frame | Control], list[Action]]


class ScriptedModule:
    """A pty whose far end answers each received frame or ACK/NAK with scripted actions: bytes to
    write, a float to sleep, or VANISH."""

    def __init__(self, behave: Behaviour) -> None:
        self.behave = behave
        self.received: list[Frame | Control] = []
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        # Opened through a symlink, as udev names a USB module: a vanished module's /dev/pts
        # number is soon another process's pty, which a re-opening driver must not reach.
        self._folder = Path(tempfile.mkdtemp(prefix="scripted-module-"))
        self.path = str(self._folder / "module")
        os.symlink(os.ttyname(self._slave), self.path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        parser = FrameParser()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.02)
            if not ready:
                events = parser.expire()
            else:
                try:
                    events = parser.feed(os.read(self._master, 4096))
                except OSError:
                    return
            for event in events:
                if not isinstance(event, Frame | Control):
                    continue
                self.received.append(event)
                for action in self.behave(event):
                    if action is VANISH:
                        self._close_fds()
                        return
                    if isinstance(action, float):
                        self._stop.wait(action)
                    elif isinstance(action, bytes):
                        os.write(self._master, action)

    def close(self) -> None:
        # Join before closing: a reader polling a closed fd number would steal the bytes of the
        # next pty that reuses it.
        self._stop.set()
        self._thread.join(timeout=2)
        self._close_fds()

    def _close_fds(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def ack() -> bytes:
    return bytes([ACK])


def reply(request: Frame, data: bytes) -> bytes:
    return Frame(request.seq, request.cmd | 0x80, data).encode()
