"""packaging/systemd/pos-agent.service: systemd accepts it, its sandbox rates at most 2.5, and it
agrees with the agent (paths, user, device, command)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.packaging.common import UNIT, require, run, unit_value, unit_values

MAX_EXPOSURE = 2.5
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def verify_tree(tmp_path: Path, with_programs: bool) -> Path:
    """A root for `systemd-analyze verify --root`: this machine's own units (multi-user.target,
    network-online.target, ... that the unit names), the unit where an administrator's would be,
    and, when asked for, the programs its Exec lines start: verify checks that they exist."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copyfile(UNIT, root / "etc/systemd/system" / UNIT.name)
    for line in unit_values("ExecStart") + unit_values("ExecReload") if with_programs else ():
        program = root / line.split()[0].lstrip("/")
        program.parent.mkdir(parents=True, exist_ok=True)
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
    return root


def verify(root: Path):
    systemd_analyze = require("systemd-analyze", "systemd")
    if not SYSTEM_UNITS.is_dir():
        pytest.fail(f"{SYSTEM_UNITS} missing: apt-get install systemd (.ci/run does)")
    unit = root / "etc/systemd/system" / UNIT.name
    return run(systemd_analyze, "verify", f"--root={root}", unit, check=False)


def test_unit_verifies_with_nothing_tolerated(tmp_path: Path) -> None:
    result = verify(verify_tree(tmp_path, with_programs=True))
    # verify exits 0 for warnings such as an unknown key: any output at all is a failure here.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_would_see_a_missing_program(tmp_path: Path) -> None:
    """The check above is live: without the programs in the tree, verify refuses the unit."""
    result = verify(verify_tree(tmp_path, with_programs=False))
    assert result.returncode != 0
    assert "Command /usr/bin/agent is not executable" in result.stderr


def test_offline_security_exposure_is_at_most_2_5() -> None:
    systemd_analyze = require("systemd-analyze", "systemd")
    result = run(systemd_analyze, "security", "--offline=yes", "--no-pager", UNIT, check=False)
    match = re.search(
        rf"Overall exposure level for {re.escape(UNIT.name)}: (\d+(?:\.\d+)?)", result.stdout
    )
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    print(f"offline exposure of {UNIT.name}: {exposure}")
    assert exposure <= MAX_EXPOSURE, result.stdout


def test_service_kind_and_restarts() -> None:
    from agent.service import daemon

    assert unit_value("Type") == "notify"
    assert unit_value("NotifyAccess") == "main"
    assert unit_value("WatchdogSec") == "30"
    assert unit_value("Restart") == "always"
    assert unit_value("RestartPreventExitStatus") == "2"  # a configuration error: fix it first
    # the agent drains transactions in flight before it exits: systemd must wait longer
    assert float(unit_value("TimeoutStopSec")) > daemon.DRAIN_TIMEOUT
    assert unit_value("WantedBy") == "multi-user.target"


def test_an_offline_boot_does_not_wait_for_the_network() -> None:
    """The payment socket must be there at once on a terminal that boots without a network."""
    assert unit_values("After") == ["network.target"]
    assert not unit_values("Wants") and not unit_values("Requires")


def test_sysusers_and_tmpfiles_agree_with_the_unit(tmp_path: Path) -> None:
    """One pair for Debian, Yocto and Buildroot: systemd-sysusers makes the unit's user and
    group, and group pos-agent-tech with the service in it (so that the agent may give it its
    control socket); systemd-tmpfiles the state directory, with the unit's owner and mode, and
    the ACL that lets that group walk in and read what the service makes readable (applied,
    and read through, in tests/integration/test_technician.py: with --root, tmpfiles looks
    group names up on this machine, not in the root)."""
    from agent.service.control import TECHNICIAN_GROUP

    sysusers = require("systemd-sysusers", "systemd")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    run(sysusers, f"--root={root}", UNIT.with_name("pos-agent.sysusers"))
    [user] = [line for line in (root / "etc/passwd").read_text().splitlines()]
    assert user.startswith(f"{unit_value('User')}:x:")
    assert user.endswith(":/nonexistent:/usr/sbin/nologin")
    members = {
        line.split(":")[0]: line.split(":")[3]
        for line in (root / "etc/group").read_text().splitlines()
    }
    assert members == {unit_value("Group"): "", TECHNICIAN_GROUP: unit_value("User")}
    tmpfiles = require("systemd-tmpfiles", "systemd")
    directory, *acls = [
        line.split()
        for line in UNIT.with_name("pos-agent.tmpfiles").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    kind, path, mode, user_name, group, _age = directory
    assert (kind, path) == ("d", "/var/lib/" + unit_value("StateDirectory"))
    assert mode == "0" + unit_value("StateDirectoryMode").lstrip("0")
    assert (user_name, group) == (unit_value("User"), unit_value("Group"))
    entries = {acl[1]: acl[-1].split(",") for acl in acls if acl[0] == "a+"}
    assert len(entries) == len(acls)
    # the directory: the group walks in and lists nothing; new files it reads, never writes
    assert f"group:{TECHNICIAN_GROUP}:--x" in entries[path]
    assert f"default:group:{TECHNICIAN_GROUP}:r--" in entries[path]
    assert {"default:group::---", "default:other::---"} <= set(entries[path])
    # what technicians read that an earlier version made, never the replay key
    earlier = {f"{path}/{name}" for name in ("journal.sqlite3", "provisioning.json",
                                            "parameters.json")}  # fmt: skip
    assert set(entries) == {path, *earlier}
    for file in earlier:
        assert entries[file] == [f"group:{TECHNICIAN_GROUP}:r--"]
    made = run(tmpfiles, "--create", f"--root={root}", UNIT.with_name("pos-agent.tmpfiles"),
               check=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    state = root / path.lstrip("/")
    assert state.is_dir() and state.stat().st_mode & 0o777 == 0o710


def test_command_is_the_agents_run() -> None:
    from agent.cli import build_parser

    program, *arguments = unit_value("ExecStart").split()
    assert program == "/usr/bin/agent"  # where the .deb, Yocto and Buildroot all put it
    args = build_parser().parse_args(arguments)
    assert args.command == "run"
    assert args.config is None  # so the agent reads /etc/pos-agent/agent.toml
    # a reload checks that file first (a broken one fails the reload), then the agent reads it
    # again on SIGHUP; tests/integration/test_config_check.py runs them against an agent
    check, signal = unit_values("ExecReload")
    program, *arguments = check.split()
    assert program == "/usr/bin/agent"
    args = build_parser().parse_args(arguments)
    assert (args.command, args.config_command, args.config) == ("config", "check", None)
    assert signal == "/bin/kill -HUP $MAINPID"


def test_directories_match_the_agents_defaults() -> None:
    from agent.config import DEFAULT_PATH, HooksConfig

    assert unit_value("User") == unit_value("Group") == "pos-agent"
    assert "dialout" in unit_value("SupplementaryGroups").split()
    for key in ("ConfigurationDirectory", "StateDirectory", "RuntimeDirectory"):
        assert unit_value(key) == "pos-agent"
    config_dir = Path("/etc") / unit_value("ConfigurationDirectory")
    assert DEFAULT_PATH.parent == config_dir
    assert Path(HooksConfig().directory).parent == config_dir
    # the payment app (group pos-agent) lists the sockets and reaches its own; anyone may walk
    # to control.sock, whose mode and the agent decide who gets in (technicians to read)
    assert unit_value("RuntimeDirectoryMode") == "0751"
    # the ACL of pos-agent.tmpfiles lets the technicians' group in: the group bits are its mask
    assert unit_value("StateDirectoryMode") == "0710"
    # the service is no member of the technicians' group by the unit: a missing group must not
    # keep it from starting (pos-agent.sysusers makes it one)
    assert "pos-agent-tech" not in unit_value("SupplementaryGroups").split()


def test_sandbox_directives_of_issue_7() -> None:
    assert unit_value("ProtectSystem") == "strict"
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert unit_value(key) == "yes"
    assert unit_value("CapabilityBoundingSet") == ""
    assert unit_value("RestrictAddressFamilies").split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert unit_values("SystemCallFilter")[0] == "@system-service"
    # chown only: the agent gives its control socket to the technicians' group
    assert unit_values("SystemCallFilter")[1:] == ["~@privileged @resources", "@chown"]
    assert unit_value("MemoryMax")


def test_devices_include_the_default_module_port() -> None:
    from agent.config import ModuleConfig

    assert unit_value("DevicePolicy") == "closed"
    allowed = dict(value.split() for value in unit_values("DeviceAllow"))
    assert allowed.get(ModuleConfig().url) == "rw"
    # a USB card module, whatever number its node gets when plugged again
    assert allowed.get("char-ttyUSB") == allowed.get("char-ttyACM") == "rw"
