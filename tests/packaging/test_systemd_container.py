"""The Debian package under real systemd (252 on Debian 12) as PID 1, in a container booted from a
Debian tree (tests/packaging/container.py): what only systemd can show. The .deb of this commit
is installed with dpkg as on a terminal (its postinst makes the accounts and starts the service),
and each case asks systemd and the agent themselves.

- the service runs as its own user inside the unit's sandbox, and READY=1 made it active;
- `systemctl reload` of a good file reads it again; of a broken file fails, names the key, and
  the agent goes on with what it runs (the unit's `ExecReload=` check, DESIGN.md section 11);
- a member of pos-agent-tech without root gets `status` and `selftest`; anyone else is refused
  with what to do (DESIGN.md section 10);
- `systemctl stop` ends it cleanly, and `start` brings it back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.container import Container, booted, debian_tree
from tests.packaging.debian import build_deb

CONFIG = "/etc/pos-agent/agent.toml"
TERMINAL = ("12345678", "123456789012345")


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    folder = tmp_path_factory.mktemp("systemd")
    deb = build_deb(folder / "deb")
    with booted(debian_tree(), folder / "console.log", bind_ro=deb.parent) as box:
        box.sh(f"dpkg --install /mnt/host/{deb.name}")
        box.sh("useradd --create-home --groups pos-agent-tech tech && useradd --create-home other")
        yield box


def properties(box: Container, *names: str) -> dict[str, str]:
    shown = box.sh(f"systemctl show pos-agent --property={','.join(names)}").stdout
    return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)


def set_terminal(box: Container, tid: str, mid: str) -> None:
    """The packaged file with TID and MID set (its keys are there, commented out)."""
    box.sh(f'sed -i -E \'s/^#?tid = .*/tid = "{tid}"/; s/^#?mid = .*/mid = "{mid}"/\' {CONFIG}')


def status(box: Container, user: str = "root") -> tuple[dict, str]:
    """``agent status --json`` as ``user``: the object and what went to stderr."""
    result = box.sh(f"runuser -u {user} -- agent status --json", check=False)
    return json.loads(result.stdout), result.stderr


def test_systemd_runs_the_installed_service_in_its_sandbox(container: Container) -> None:
    shown = properties(
        container, "ActiveState", "SubState", "Type", "MainPID", "NRestarts", "StatusText"
    )
    # Type=notify: active only once the agent sent READY=1; its STATUS= line is systemd's now
    assert (shown["ActiveState"], shown["SubState"], shown["Type"]) == (
        "active", "running", "notify",
    )  # fmt: skip
    assert shown["NRestarts"] == "0"
    assert "not-signed-in" in shown["StatusText"]
    process = container.sh(f"cat /proc/{shown['MainPID']}/status").stdout
    facts = dict(re.findall(r"^(\w+):\s+(.*)$", process, re.MULTILINE))
    user = container.sh("id -u pos-agent").stdout.strip()
    assert facts["Uid"].split()[0] == user  # its own user, not root
    assert facts["NoNewPrivs"] == "1" and facts["Seccomp"] == "2"  # the unit's sandbox
    assert int(facts["CapEff"], 16) == 0 and int(facts["CapBnd"], 16) == 0
    sockets = container.sh("stat -c '%a %U %G %n' /run/pos-agent/agent.sock "
                           "/run/pos-agent/control.sock").stdout.split("\n")  # fmt: skip
    assert sockets[0] == "660 pos-agent pos-agent /run/pos-agent/agent.sock"
    assert sockets[1] == "660 pos-agent pos-agent-tech /run/pos-agent/control.sock"


def test_reload_reads_a_good_file_and_refuses_a_broken_one(container: Container) -> None:
    before = properties(container, "MainPID")["MainPID"]
    set_terminal(container, *TERMINAL)
    container.sh("systemctl reload pos-agent")
    assert status(container)[0]["tid"] == TERMINAL[0]

    set_terminal(container, "1234", TERMINAL[1])  # a TID of 4 characters
    refused = container.sh("systemctl reload pos-agent", check=False)
    assert refused.returncode != 0
    assert "Job for pos-agent.service failed" in refused.stderr
    log = container.sh("journalctl --unit pos-agent --no-pager --output cat").stdout
    assert f"{CONFIG}: terminal.tid = '1234': expected 8 printable ASCII characters" in log
    shown = properties(container, "ActiveState", "MainPID", "NRestarts")
    assert shown == {"ActiveState": "active", "MainPID": before, "NRestarts": "0"}
    running, said = status(container)  # the agent goes on with the file it read
    assert (running["running"], running["tid"]) == (True, TERMINAL[0])
    assert "terminal.tid = '1234'" in running["config_error"] and "terminal.tid" in said

    set_terminal(container, *TERMINAL)
    container.sh("systemctl reload pos-agent")


def test_a_technician_without_root_reads_status_and_selftest(container: Container) -> None:
    set_terminal(container, *TERMINAL)
    running, said = status(container, "tech")
    assert (running["running"], running["tid"], running["config_error"]) == (
        True, TERMINAL[0], None,
    )  # fmt: skip
    assert said == ""
    checked = container.sh("runuser -u tech -- agent selftest --json", check=False)
    report = json.loads(checked.stdout)
    # no host provisioned: the self-check says so (exit 1), read by a technician
    assert checked.returncode == 1 and report["tid"] == TERMINAL[0]
    findings = {check["id"]: check["finding"] for check in report["checks"]}
    assert findings["provisioning"] == "provisioning.unprovisioned"
    assert container.sh("runuser -u tech -- agent journal").stdout.strip()

    refused = container.sh("runuser -u other -- agent status", check=False)
    assert refused.returncode == 2
    assert "member of group pos-agent-tech" in refused.stderr


def test_stop_is_clean_and_start_brings_it_back(container: Container) -> None:
    set_terminal(container, *TERMINAL)
    container.sh("systemctl stop pos-agent")
    shown = properties(container, "ActiveState", "Result", "ExecMainStatus")
    assert shown == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    container.sh("systemctl start pos-agent")
    assert properties(container, "ActiveState")["ActiveState"] == "active"
    assert status(container)[0]["tid"] == TERMINAL[0]


def test_the_tree_was_not_changed(container: Container) -> None:
    """Every boot starts from the same tree: what the tests did lives in the container's tmpfs."""
    assert not (debian_tree() / "usr/bin/agent").exists()
    assert Path(container.root / "usr/bin/agent").exists()
