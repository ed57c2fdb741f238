"""``agent sim module``: the module simulator as a process.

It prints the path (or ``socket://`` URL) to open as its first line, then takes one command per
line on stdin, answering each with one line (``ok ...`` or ``error: ...``):

    noise RATE | drop RATE | delay SECONDS | busy COUNT | tamper on|off | unplug | replug
    garbage COUNT (random bytes on the line now) | status | quit
    pin DIGITS|cancel (what the next cardholder types; default 123456)
    keypad SECONDS (how long they take to type it)

SIGTERM, SIGINT or ``quit`` stop it with exit status 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from agent.sim.module import ModuleSimulator
from agent.sim.module_port import SimulatedModulePort


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"a rate is between 0 and 1, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 60.0:
        raise ValueError(f"a delay is between 0 and 60 seconds, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"a count is 0 or more, got {text}")
    return value


def _switch(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError(f"expected on or off, got {text}")
    return text == "on"


def status(port: SimulatedModulePort) -> dict[str, object]:
    sim = port.simulator
    return {
        "path": port.path,
        "noise": port.faults.noise,
        "drop": port.faults.drop,
        "delay": port.delay,
        "busy": sim.busy_answers,
        "tamper": sim.tampered,
        "executed": sim.executed,
        "keypad": {"delay": sim.keypad.delay, "entries": sim.keypad.entries},
    }


def apply(port: SimulatedModulePort, line: str) -> str:
    """Carry out one console command; returns the line to answer with."""
    words = line.split()
    if not words:
        return "error: empty command"
    name, args = words[0], words[1:]
    setters: dict[str, tuple[Callable[[str], object], Callable[[object], None]]] = {
        "noise": (_rate, lambda v: setattr(port.faults, "noise", v)),
        "drop": (_rate, lambda v: setattr(port.faults, "drop", v)),
        "delay": (_seconds, lambda v: setattr(port, "delay", v)),
        "busy": (_count, lambda v: setattr(port.simulator, "busy_answers", v)),
        "tamper": (_switch, lambda v: setattr(port.simulator, "tampered", v)),
        "garbage": (_count, lambda v: port.inject(os.urandom(v))),
        "pin": (str, lambda v: port.simulator.keypad.set(str(v))),
        "keypad": (_seconds, lambda v: setattr(port.simulator.keypad, "delay", v)),
    }
    actions = {"unplug": port.unplug, "replug": port.replug}
    try:
        if name in setters and len(args) == 1:
            parse, store = setters[name]
            store(parse(args[0]))
            return f"ok {name} {args[0]}"
        if name in actions and not args:
            actions[name]()
            return f"ok {name}"
        if name == "status" and not args:
            return "ok " + json.dumps(status(port))
    except ValueError as exc:
        return f"error: {name}: {exc}"
    return f"error: unknown command {line.strip()!r}; see 'agent sim module --help'"


def serve(port: SimulatedModulePort, commands: TextIO, out: TextIO) -> None:
    """Answer console commands until ``quit`` or end of input, then wait for a signal."""
    for line in commands:
        if line.strip() == "quit":
            return
        print(apply(port, line), file=out, flush=True)
    threading.Event().wait()


def run(
    *,
    state_path: Path,
    listen: tuple[str, int] | None,
    link: Path | None,
    settings: list[str],
    clock_offset: float,
    seed: int | None,
) -> int:
    """Serve until stopped. ``settings`` are console commands applied before the first request
    (the command-line flags); a bad one raises ``ValueError``."""
    from agent.sim.module import ModuleState

    simulator = ModuleSimulator(ModuleState.load_or_create(state_path), clock_offset=clock_offset)
    port = SimulatedModulePort(simulator, seed=seed)
    for setting in settings:
        answer = apply(port, setting)
        if not answer.startswith("ok"):
            raise ValueError(answer.removeprefix("error: "))

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        path = port.start_tcp(*listen) if listen else port.start_pty(link)
        print(path, flush=True)
        serve(port, sys.stdin, sys.stdout)
    finally:
        port.stop()
    return 0
