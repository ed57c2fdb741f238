"""The over-the-air health gate of packaging/ota, run as the update systems run it, with the
real `agent` between the simulators (DESIGN.md section 14): an update is refused only for what it
can break (the service does not start, the card module, keys, journal or configuration fail),
and passes with a warning when the acquirer does not answer or the terminal is not yet
provisioned; Mender's script says "retry later" (21) while the agent starts, for a bounded time.

Mender reads the inventory script's output; RAUC's `rauc` and SWUpdate's `fw_setenv` cannot run
here (no slots, no bootloader environment), so stand-ins on PATH record how the scripts call
them, as does one for `systemctl reboot`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.packaging.common import PACKAGING
from tests.processes import AgentProcess, control, control_ready, wait_for

OTA = PACKAGING / "ota"
GATE = OTA / "health-gate"
MENDER = OTA / "mender/ArtifactCommit_Enter_50_pos-agent"
RAUC = OTA / "rauc/mark-good"
SWUPDATE = OTA / "swupdate/postinstall"
AGENT = str(Path(sys.executable).with_name("agent"))
RETRY_LATER = 21  # Mender's exit code for "run this state script again later"


def run(script: Path, tmp_path: Path, config: Path, *options: str) -> tuple[int, str, list[str]]:
    """Exit status, output and the stand-ins' calls of one script. Each run has its own
    "retry later" file; a short start timeout unless ``options`` give one (no agent that is
    going to answer takes long to)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    for name in ("rauc", "fw_setenv", "systemctl"):
        stand_in = bin_dir / name
        stand_in.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n')
        stand_in.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "POS_AGENT_COMMAND": AGENT,
           "POS_AGENT_HEALTH_GATE": str(GATE)}  # fmt: skip
    if script != OTA / "mender/mender-inventory-pos-agent":
        if "--start-timeout" not in options:
            options = ("--start-timeout", "3", *options)
        if "--wait-file" not in options:
            options = ("--wait-file", str(tmp_path / "gate.waiting"), *options)
    result = subprocess.run([str(script), "--config", str(config), *options],
                            capture_output=True, text=True, env=env, timeout=300,
                            check=False)  # fmt: skip
    done = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return result.returncode, result.stdout + result.stderr, done


def edited(config: Path, name: str, *, without: tuple[str, ...] = (), module: str = "",
           replace: dict[str, str] | None = None) -> Path:  # fmt: skip
    """A copy of ``config`` beside it: without the lines that begin with ``without``, with the
    ``module`` line added to its [module] table, with each text of ``replace`` replaced."""
    text = config.read_text()
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    lines = [line for line in text.splitlines() if not line.startswith(without or ("\0",))]
    if module:
        lines.insert(lines.index("[module]") + 1, module)
    copy = config.with_name(name)
    copy.write_text("\n".join(lines) + "\n")
    return copy


def start_agent(tmp_path: Path, config: Path, signed_in: bool = False) -> AgentProcess:
    """A running agent whose control socket answers (and that has signed in, if asked)."""
    agent = AgentProcess(config, tmp_path / "agent.sock", tmp_path / "agent.log")
    agent.wait_ready()
    wait_for(lambda: control_ready(tmp_path / "control.sock"), 10, "the control socket")
    if signed_in:
        wait_for(lambda: control(tmp_path / "control.sock", b'{"cmd": "status"}')["signed_in"],
                 15, "the sign-in")  # fmt: skip
    return agent


@pytest.fixture
def healthy(tmp_path, simulators):
    """A running agent, signed in: its self-check passes."""
    _, _, config = simulators
    agent = start_agent(tmp_path, config, signed_in=True)
    yield config
    agent.stop()


@pytest.fixture
def not_started(tmp_path):
    """No agent running (the service does not start) and no card module."""
    config = tmp_path / "not-started.toml"
    config.write_text('[terminal]\ntid = "10000001"\nmid = "898100012340001"\n'
                      '[host]\nprimary = "127.0.0.1:9"\nconnect_timeout = 1\n'
                      '[module]\nurl = "/nonexistent/card-module"\n'
                      f'[journal]\npath = "{tmp_path / "journal.sqlite3"}"\n'
                      f'[control]\nsocket = "{tmp_path / "nobody.sock"}"\n')  # fmt: skip
    return config


def assert_refused_by_every_update_system(tmp_path: Path, config: Path) -> None:
    code, output, _ = run(MENDER, tmp_path, config)
    assert code == 1, output  # Mender rolls the update back
    assert run(RAUC, tmp_path, config)[2] == ["rauc status mark-bad", "systemctl reboot"]
    assert run(SWUPDATE, tmp_path, config)[2] == ["fw_setenv ustate 3", "systemctl reboot"]


def test_a_healthy_terminal_passes_and_every_update_system_confirms(tmp_path, healthy) -> None:
    code, output, _ = run(GATE, tmp_path, healthy)
    assert code == 0 and "TID 10000001 healthy" in output, output
    assert run(MENDER, tmp_path, healthy)[0] == 0
    assert run(RAUC, tmp_path, healthy)[2] == ["rauc status mark-good"]
    assert run(SWUPDATE, tmp_path, healthy)[2] == ["fw_setenv ustate 0"]


def test_an_acquirer_that_does_not_answer_is_not_the_updates_fault(tmp_path, simulators,
                                                                   healthy) -> None:  # fmt: skip
    host, _, _ = simulators
    host.stop()
    code, output, _ = run(GATE, tmp_path, healthy)
    assert code == 0, output
    assert "warning, not the update's: network." in output
    assert run(RAUC, tmp_path, healthy)[2] == ["rauc status mark-good"]


def test_a_terminal_not_yet_provisioned_passes_with_a_warning(tmp_path, simulators) -> None:
    _, _, config = simulators
    fresh = edited(config, "fresh.toml", without=("tid =", "mid =", "primary ="))
    agent = start_agent(tmp_path, fresh)
    try:
        code, output, _ = run(GATE, tmp_path, fresh)
        assert code == 0 and "TID - passed" in output, output
        assert "warning, not the update's: provisioning.unprovisioned" in output
        # no sign-in yet, so no working keys: they come with the first one
        assert "warning, not the update's: keys.keys-absent" in output
        assert run(MENDER, tmp_path, fresh)[0] == 0
    finally:
        agent.stop()


def test_a_broken_card_module_is_refused(tmp_path, simulators) -> None:
    _, module, config = simulators
    unplugged = edited(config, "unplugged.toml", replace={module.path: "/nonexistent/module"})
    agent = start_agent(tmp_path, unplugged)
    try:
        code, output, _ = run(GATE, tmp_path, unplugged)
        assert code == 1 and "refused: module.module-unreachable" in output, output
        assert_refused_by_every_update_system(tmp_path, unplugged)
    finally:
        agent.stop()


def test_keys_the_terminal_signed_in_with_are_refused_when_absent(tmp_path, simulators) -> None:
    """The update's configuration names a slot without keys, on a terminal that has signed in
    before: the keys it had are gone, and the update is why."""
    _, _, config = simulators
    start_agent(tmp_path, config, signed_in=True).stop()
    empty_slot = edited(config, "empty-slot.toml", module="key_slot = 7")
    agent = start_agent(tmp_path, empty_slot)
    try:
        code, output, _ = run(GATE, tmp_path, empty_slot)
        assert code == 1 and "refused: keys.tmk-absent" in output, output
    finally:
        agent.stop()


def test_a_journal_found_damaged_on_this_boot_is_refused(tmp_path, simulators) -> None:
    _, _, config = simulators
    (tmp_path / "journal.sqlite3").write_bytes(b"SQLite format 3\0" + os.urandom(8192))
    agent = start_agent(tmp_path, config)  # it sets the damaged journal aside, starts afresh
    try:
        assert list(tmp_path.glob("journal.sqlite3.damaged-*"))
        code, output, _ = run(GATE, tmp_path, config)
        assert code == 1 and "refused: storage.journal-damaged" in output, output
        assert "set aside since this boot" in output
    finally:
        agent.stop()


def test_a_journal_that_cannot_be_written_is_refused(tmp_path, simulators,
                                                     freezable_disk) -> None:  # fmt: skip
    """Its disk frozen (as a failing or read-only one): the running agent's self-check finds
    the journal unwritable."""
    _, _, config = simulators
    frozen = edited(config, "frozen.toml", replace={
        str(tmp_path / "journal.sqlite3"): str(freezable_disk / "journal.sqlite3")})  # fmt: skip
    agent = start_agent(tmp_path, frozen, signed_in=True)
    try:
        subprocess.run(["fsfreeze", "-f", str(freezable_disk)], check=True, timeout=10)
        try:
            code, output, _ = run(GATE, tmp_path, frozen)
        finally:
            subprocess.run(["fsfreeze", "-u", str(freezable_disk)], check=True, timeout=10)
        assert code == 1 and "refused: storage." in output, output
    finally:
        agent.stop()


def test_a_configuration_the_agent_refuses_is_refused_at_once(tmp_path, simulators) -> None:
    """No retry later either: the service will not start on it (RestartPreventExitStatus=2)."""
    _, _, config = simulators
    broken = edited(config, "broken.toml", replace={"[gateway]": "[gateway]\nmax_clients = 0"})
    code, output, _ = run(GATE, tmp_path, broken, "--start-timeout", "600")
    assert code == 1 and "the configuration is refused" in output, output
    assert "max_clients" in output
    assert_refused_by_every_update_system(tmp_path, broken)


def test_a_service_that_does_not_start_is_refused(tmp_path, not_started) -> None:
    code, output, _ = run(GATE, tmp_path, not_started, "--start-timeout", "1")
    assert code == 1 and "the service did not answer within 1 s" in output, output
    # and why it may not, from the self-check run directly, for the update system's log
    assert "self-check: module.module-unreachable" in output
    # Mender is told to retry later first: the next test
    assert run(RAUC, tmp_path, not_started)[2] == ["rauc status mark-bad", "systemctl reboot"]
    assert run(SWUPDATE, tmp_path, not_started)[2] == ["fw_setenv ustate 3", "systemctl reboot"]


def test_mender_retries_later_while_the_agent_starts(tmp_path, simulators) -> None:
    _, _, config = simulators
    waiting = tmp_path / "gate.waiting"
    code, output, _ = run(MENDER, tmp_path, config, "--start-timeout", "600")
    assert code == RETRY_LATER and "retry later" in output, output
    assert waiting.exists()
    agent = start_agent(tmp_path, config)
    try:
        code, output, _ = run(MENDER, tmp_path, config, "--start-timeout", "600")
        assert code == 0, output
        assert not waiting.exists()  # the next update waits afresh
    finally:
        agent.stop()


def test_mender_is_told_to_roll_back_once_the_agent_had_its_time(tmp_path, not_started) -> None:
    """The first "retry later" was long ago (by the boot clock): the agent never came up."""
    waiting = tmp_path / "gate.waiting"
    waiting.write_text(f"{time.clock_gettime(time.CLOCK_BOOTTIME) - 200}\n")
    code, output, _ = run(MENDER, tmp_path, not_started, "--start-timeout", "120")
    assert code == 1 and "the service did not answer within 120 s" in output, output
    assert not waiting.exists()


def test_the_mender_inventory_names_the_terminal(tmp_path, healthy) -> None:
    code, output, _ = run(OTA / "mender/mender-inventory-pos-agent", tmp_path, healthy)
    assert code == 0
    attributes = dict(line.split("=", 1) for line in output.splitlines())
    assert attributes["pos_agent_tid"] == "10000001"
    assert attributes["pos_agent_state"] == "registered"
