"""The over-the-air health gate of packaging/ota, run as the update systems run it, with the
real `agent`: a healthy terminal (a running agent between the simulators) passes, one whose card
module is gone is refused. Mender reads the inventory script's output; RAUC's `rauc` and
SWUpdate's `fw_setenv` cannot run here (no slots, no bootloader environment), so stand-ins on
PATH record how the scripts call them, as does one for `systemctl reboot`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging.common import PACKAGING
from tests.processes import AgentProcess, control, control_ready, wait_for

OTA = PACKAGING / "ota"
AGENT = str(Path(sys.executable).with_name("agent"))


def run(script: Path, tmp_path: Path, config: Path) -> tuple[int, str, list[str]]:
    """Exit status, output and the stand-ins' calls of one script."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    for name in ("rauc", "fw_setenv", "systemctl"):
        stand_in = bin_dir / name
        stand_in.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n')
        stand_in.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "POS_AGENT_COMMAND": AGENT,
           "POS_AGENT_HEALTH_GATE": str(OTA / "health-gate")}  # fmt: skip
    result = subprocess.run([str(script), "--config", str(config)], capture_output=True,
                            text=True, env=env, timeout=120, check=False)  # fmt: skip
    done = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return result.returncode, result.stdout + result.stderr, done


@pytest.fixture
def healthy(tmp_path, simulators):
    """A running agent, signed in: its self-check passes."""
    _, _, config = simulators
    agent = AgentProcess(config, tmp_path / "agent.sock", tmp_path / "agent.log")
    agent.wait_ready()
    wait_for(lambda: control_ready(tmp_path / "control.sock"), 10, "the control socket")
    wait_for(lambda: control(tmp_path / "control.sock", b'{"cmd": "status"}')["signed_in"], 15,
             "the sign-in")  # fmt: skip
    yield config
    agent.stop()


@pytest.fixture
def broken(tmp_path):
    """No agent running and no card module: the self-check fails."""
    config = tmp_path / "broken.toml"
    config.write_text('[terminal]\ntid = "10000001"\nmid = "898100012340001"\n'
                      '[host]\nprimary = "127.0.0.1:9"\nconnect_timeout = 1\n'
                      '[module]\nurl = "/nonexistent/card-module"\n'
                      f'[journal]\npath = "{tmp_path / "journal.sqlite3"}"\n'
                      f'[control]\nsocket = "{tmp_path / "nobody.sock"}"\n')  # fmt: skip
    return config


def test_the_gate_passes_a_healthy_terminal_and_refuses_a_broken_one(tmp_path, healthy,
                                                                     broken) -> None:  # fmt: skip
    code, output, _ = run(OTA / "health-gate", tmp_path, healthy)
    assert code == 0 and "TID 10000001 healthy" in output
    code, output, _ = run(OTA / "health-gate", tmp_path, broken)
    assert code == 1 and "module.module-unreachable" in output
    code, output, _ = run(OTA / "mender/ArtifactCommit_Enter_50_pos-agent", tmp_path, broken)
    assert code == 1  # Mender rolls the update back


def test_rauc_and_swupdate_confirm_or_fall_back(tmp_path, healthy, broken) -> None:
    assert run(OTA / "rauc/mark-good", tmp_path, healthy)[2] == ["rauc status mark-good"]
    assert run(OTA / "rauc/mark-good", tmp_path, broken)[2] == [
        "rauc status mark-bad", "systemctl reboot"]  # fmt: skip
    assert run(OTA / "swupdate/postinstall", tmp_path, healthy)[2] == ["fw_setenv ustate 0"]
    assert run(OTA / "swupdate/postinstall", tmp_path, broken)[2] == [
        "fw_setenv ustate 3", "systemctl reboot"]  # fmt: skip


def test_the_mender_inventory_names_the_terminal(tmp_path, healthy) -> None:
    code, output, _ = run(OTA / "mender/mender-inventory-pos-agent", tmp_path, healthy)
    assert code == 0
    attributes = dict(line.split("=", 1) for line in output.splitlines())
    assert attributes["pos_agent_tid"] == "10000001"
    assert attributes["pos_agent_state"] == "registered"
