"""packaging/systemd/pos-agent-fleet-watch.service: systemd accepts it, its sandbox rates at most
2.5, and it starts what the command line calls the incident watcher, with its own configuration."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.packaging.common import PACKAGING, require, run, unit_value

UNIT = PACKAGING / "systemd" / "pos-agent-fleet-watch.service"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 2.5


def test_unit_verifies_with_nothing_tolerated(tmp_path: Path) -> None:
    """`systemd-analyze verify` in a root holding this machine's units, the unit where an
    administrator's would be, and the program it starts."""
    systemd_analyze = require("systemd-analyze", "systemd")
    if not SYSTEM_UNITS.is_dir():
        pytest.fail(f"{SYSTEM_UNITS} missing: apt-get install systemd (.ci/run does)")
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    unit = root / "etc/systemd/system" / UNIT.name
    shutil.copyfile(UNIT, unit)
    program = root / unit_value("ExecStart", UNIT).split()[0].lstrip("/")
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    result = run(systemd_analyze, "verify", f"--root={root}", unit, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_offline_security_exposure_is_at_most_2_5() -> None:
    systemd_analyze = require("systemd-analyze", "systemd")
    result = run(systemd_analyze, "security", "--offline=yes", "--no-pager", UNIT, check=False)
    match = re.search(
        rf"Overall exposure level for {re.escape(UNIT.name)}: (\d+(?:\.\d+)?)", result.stdout
    )
    assert match, result.stdout + result.stderr
    print(f"offline exposure of {UNIT.name}: {match.group(1)}")
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_it_runs_the_incident_watcher_on_its_own_configuration() -> None:
    from agent.cli import build_parser

    program, *arguments = unit_value("ExecStart", UNIT).split()
    assert program == "/usr/bin/agent"
    args = build_parser().parse_args(arguments)
    assert args.handler == "fleet:cmd_fleet_watch"
    assert str(args.config) == "/etc/pos-agent/fleet.toml"
    # it tells systemd when it is subscribed; a configuration error is not restarted
    assert (unit_value("Type", UNIT), unit_value("NotifyAccess", UNIT)) == ("notify", "main")
    assert unit_value("RestartPreventExitStatus", UNIT) == "2"
    assert unit_value("DynamicUser", UNIT) == "yes"  # no state of its own: the broker keeps it
