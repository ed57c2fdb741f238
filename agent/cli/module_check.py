"""agent module check: the conformance run of DESIGN.md section 5 against a card module, through
the driver that reaches it (section 12), so a vendor can prove a module or a driver before it
ships. Exit 0 no case failed, 1 a case failed, 2 usage (no such driver, one that cannot load)."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from agent.cli import render
from agent.cli.common import EXIT_FAILED, EXIT_OK, UsageError, load_config

if TYPE_CHECKING:
    from drivers.conformance.commands import TusnCiphertext
    from drivers.conformance.report import Report
    from drivers.module import CardModule, ModuleSettings

MAX_SLOT = 255
DETAIL_LIMIT = 400  # characters of a case's detail on a line
_COLOURS = {"pass": "32", "fail": "31", "skip": "33"}  # green, red, yellow
_SIM_STOP = 10.0  # seconds the simulator has to stop once asked


class Simulator:
    """``agent sim module`` on a pty in a folder of its own; its console is the run's fault
    injection (:class:`drivers.conformance.faults.FaultInjection`). A process, not the simulator
    in this one: the command line's modules leave the test equipment to its own commands."""

    def __init__(self, folder: Path) -> None:
        command = [
            sys.executable, "-m", "agent", "sim", "module", "--pty",
            "--link", str(folder / "module"), "--state", str(folder / "module.json"),
        ]  # fmt: skip
        # The agent this one runs from, wherever that is (a venv, a zipapp).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
        self._log = folder / "simulator.log"
        with self._log.open("w") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                env=env,
            )  # fmt: skip
        assert self.process.stdin is not None and self.process.stdout is not None
        self._console: TextIO = self.process.stdin
        self._answers: TextIO = self.process.stdout
        self.path = self._answers.readline().strip()
        if not self.path:
            self.stop()
            said = self._log.read_text(errors="replace").strip().splitlines() or ["no message"]
            raise UsageError(f"--sim: the module simulator did not start: {said[-1]}")

    def _say(self, line: str) -> None:
        self._console.write(line + "\n")
        self._console.flush()
        answer = self._answers.readline().strip()
        if not answer.startswith("ok"):
            raise RuntimeError(f"the module simulator refused {line!r}: {answer or 'no answer'}")

    def noise(self, rate: float) -> None:
        self._say(f"noise {rate}")

    def unplug(self) -> None:
        self._say("unplug")

    def replug(self) -> None:
        self._say("replug")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=_SIM_STOP)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._console.close()
        self._answers.close()


@contextlib.contextmanager
def _simulator() -> Iterator[Simulator]:
    from agent.wire.mac import require_software_des

    require_software_des()  # the simulator's own start would say it less plainly
    with tempfile.TemporaryDirectory(prefix="pos-agent-module-check-") as folder:
        simulator = Simulator(Path(folder))
        try:
            yield simulator
        finally:
            simulator.stop()


def _tusn_ciphertext() -> TusnCiphertext | None:
    """The TUSN ciphertext in software (cryptography, the extra ``sim``), where it is
    installed; a terminal has none and skips that one case."""
    from agent.wire.mac import SoftwareDesMissing, require_software_des, tusn_ciphertext

    try:
        require_software_des()
    except SoftwareDesMissing:
        return None
    return tusn_ciphertext


def _open(driver: str, settings: ModuleSettings) -> CardModule:
    from drivers.loading import DriverError, open_module

    try:
        return open_module(driver, settings)
    except DriverError as exc:
        raise UsageError(str(exc)) from None


def _close(module: CardModule) -> None:
    try:
        module.close()
    except Exception as exc:  # a vendor's driver: said, as every other thing it does wrong
        said = f"{type(exc).__name__}: {_shown(str(exc))}"
        print(f"agent module check: the driver's close raised {said}", file=sys.stderr)


def _shown(text: str) -> str:
    """Text from the module or a driver, displayed, never obeyed by the terminal: what is not
    printable escaped, clipped."""
    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return escaped if len(escaped) <= DETAIL_LIMIT else escaped[: DETAIL_LIMIT - 3] + "..."


def _prompt(text: str) -> None:
    print(f"\n>>> {text}", file=sys.stderr, flush=True)


def _as_json(report: Report, driver: str, url: str) -> dict[str, object]:
    from drivers.conformance.report import Outcome

    info = report.info
    return {
        "driver": driver,
        "url": url,
        "module": None
        if info is None
        else {
            "serial": _shown(info.serial),
            "model": _shown(info.model),
            "firmware": _shown(info.firmware),
            "tampered": info.tampered,
        },
        "cases": [
            {"name": case.name, "result": case.outcome.value, "detail": _shown(case.detail)}
            for case in report.cases
        ],
        **{outcome.name.lower(): report.count(outcome) for outcome in Outcome},
        "ok": report.ok,
    }


def _as_text(report: Report, driver: str, url: str, colour: bool) -> str:
    from drivers.conformance.report import Outcome

    lines = [f"agent module check: driver {driver!r}, module at {_shown(url)}"]
    if report.info is not None:
        info = report.info
        lines.append(
            f"module {_shown(info.serial)}, model {_shown(info.model)}, "
            f"firmware {_shown(info.firmware)}"
        )
    lines.append("")
    width = max((len(case.name) for case in report.cases), default=0)
    for case in report.cases:
        mark = case.outcome.value.upper() if case.outcome is Outcome.FAILED else case.outcome.value
        if colour:
            mark = f"\033[{_COLOURS[case.outcome.value]}m{mark}\033[0m"
        lines.append(f"{mark}  {case.name.ljust(width)}  {_shown(case.detail)}")
    counts = ", ".join(f"{report.count(o)} {o.name.lower()}" for o in Outcome)
    verdict = "no case failed" if report.ok else "the module or its driver answered wrong"
    lines += ["", f"{counts}: {verdict}"]
    return "\n".join(lines)


def cmd_module_check(args: argparse.Namespace) -> int:
    from drivers.conformance.commands import KeyOptions
    from drivers.conformance.suite import Options, run
    from drivers.loading import BUILTIN
    from drivers.module import ModuleSettings

    for slot in args.slot or ():
        if not 0 <= slot <= MAX_SLOT:
            raise UsageError(f"--slot {slot}: a slot is 0 to {MAX_SLOT} (one byte on the line)")
    with contextlib.ExitStack() as stack:
        if args.sim:
            simulator = stack.enter_context(_simulator())
            driver, settings = args.driver or BUILTIN, ModuleSettings(url=simulator.path)
            faults, pin = simulator, (lambda text: None)  # its test keypad types the test PIN
        else:
            configured = load_config(args).module
            driver = args.driver or configured.driver
            settings = ModuleSettings(url=args.url or configured.url, baudrate=configured.baudrate)
            faults, pin = None, (_prompt if args.pin else None)
        module = _open(driver, settings)
        stack.callback(_close, module)
        # the simulator holds the test keys: a run against it proves the key cases, never skips
        keys = KeyOptions(
            test_keys=args.test_keys or args.sim, pin=pin, tusn_ciphertext=_tusn_ciphertext()
        )
        slots = {"slots": tuple(args.slot), "optional_slots": frozenset()} if args.slot else {}
        progress = render.Progress("agent module check")
        options = Options(
            keys=keys,
            faults=faults,
            starting=lambda name: setattr(progress, "what", f"agent module check: {name}"),
            **slots,
        )
        with progress:
            report = run(module, options)
    if args.json:
        render.print_json(_as_json(report, driver, settings.url))
    else:
        print(_as_text(report, driver, settings.url, render.colour_wanted(sys.stdout)))
    return EXIT_OK if report.ok else EXIT_FAILED
