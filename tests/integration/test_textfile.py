"""telemetry.textfile as node_exporter sees it (DESIGN.md section 14): Debian's
prometheus-node-exporter, run as its own unprivileged user (nobody here) with only the textfile
collector, scrapes what ``textfile.write`` wrote under the service's umask 077: the info, state
and counter series, hostile label text included, with no scrape error. And the unit's drop-in
lets the service write where that node_exporter reads: the same directory, open in the sandbox
(ReadWritePaths=) and to the service's user (an ACL on a directory that is root's)."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.telemetry import textfile
from tests.packaging.common import PACKAGING, UNIT, require, unit_value
from tests.packaging.test_systemd_unit import verify, verify_tree
from tests.processes import free_port, wait_for
from tests.unit.test_textfile import COUNTERS, HOSTILE, MESSAGE, samples, series

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"  # Debian's package of node_exporter
DROP_IN = PACKAGING / "systemd/pos-agent.service.d/textfile.conf"
UNPRIVILEGED = pwd.getpwnam("nobody")


def as_unprivileged() -> list[str]:
    """What runs a command as nobody when the tests run as root: node_exporter never reads as
    root (Debian's runs as user prometheus), so a file it may not read shows."""
    if os.geteuid() != 0:
        return []
    setpriv = require("setpriv", "util-linux")
    return [setpriv, f"--reuid={UNPRIVILEGED.pw_uid}", f"--regid={UNPRIVILEGED.pw_gid}",
            "--clear-groups"]  # fmt: skip


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A root-owned 0755 folder outside pytest's own (0700, root's only), as Debian's
    /var/lib/prometheus/node-exporter is."""
    folder = Path(tempfile.mkdtemp(prefix="pos-agent-textfile-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def scrape(folder: Path) -> str:
    """/metrics of a node_exporter that has only the textfile collector, reading ``folder``."""
    if not os.access(NODE_EXPORTER, os.X_OK):
        pytest.skip(f"{NODE_EXPORTER} missing: apt-get install prometheus-node-exporter")
    port = free_port()
    exporter = subprocess.Popen(
        [*as_unprivileged(), NODE_EXPORTER, "--collector.disable-defaults",
         "--collector.textfile", f"--collector.textfile.directory={folder}",
         "--web.disable-exporter-metrics", f"--web.listen-address=127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    body: list[str] = []

    def answered() -> bool:
        if exporter.poll() is not None:
            raise RuntimeError(f"node_exporter exited {exporter.returncode}: "
                               f"{exporter.stderr.read() if exporter.stderr else ''}")  # fmt: skip
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
                body.append(page.read().decode())
        except OSError:
            return False
        return True

    try:
        wait_for(answered, 20, "node_exporter's /metrics")
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)
        if exporter.stderr:
            exporter.stderr.close()
    return body[0]


def write_as_the_service(path: Path, message: dict) -> None:
    """``textfile.write`` under the unit's UMask=0077."""
    previous = os.umask(0o077)
    try:
        textfile.write(path, message, COUNTERS)
    finally:
        os.umask(previous)


def test_node_exporter_reads_the_state_and_the_counters(shared_dir: Path) -> None:
    write_as_the_service(shared_dir / "pos-agent.prom", MESSAGE)
    found = samples(scrape(shared_dir))
    assert found[series("node_textfile_scrape_error")] == 0
    info = series("pos_agent_info", serial="SIM00001234", tid="10000001", version="1.4.0")
    assert found[info] == 1
    merchant = series("pos_agent_acquirer_info", serial="SIM00001234", mid="898100012340001",
                      acquirer="10.1.2.3:5000")  # fmt: skip
    assert found[merchant] == 1
    assert found[series("pos_agent_state", serial="SIM00001234", state="registered")] == 1
    assert found[series("pos_agent_state", serial="SIM00001234", state="offline")] == 0
    assert found[series("pos_agent_97_total", serial="SIM00001234")] == 5
    assert found[series("pos_agent_recoveries_total", serial="SIM00001234")] == 3
    assert found[series("pos_agent_refused_requests_total", serial="SIM00001234")] == 4
    assert found[series("pos_agent_reversals_stuck", serial="SIM00001234")] == 1


def test_node_exporter_accepts_hostile_label_text(shared_dir: Path) -> None:
    message = {**MESSAGE, "tid": HOSTILE, "cause": HOSTILE, "state": "unregistered"}
    write_as_the_service(shared_dir / "pos-agent.prom", message)
    found = samples(scrape(shared_dir))
    assert found[series("node_textfile_scrape_error")] == 0
    [info] = [dict(labels) for name, labels in found if name == "pos_agent_info"]
    assert info["tid"] == 'a"b\\c\ufffdd\ufffd\ufffd]0;owned\ufffd\ufffd[2J\ufffdevil'
    assert found[series("pos_agent_state", serial="SIM00001234", state="unregistered")] == 1


def test_a_file_only_its_writer_may_read_is_a_scrape_error(shared_dir: Path) -> None:
    """The check above is live: the mode 0600 of before is what node_exporter could not read."""
    if not as_unprivileged():
        pytest.skip("node_exporter runs as the test's own user: it reads a 0600 file too")
    write_as_the_service(shared_dir / "pos-agent.prom", MESSAGE)
    (shared_dir / "pos-agent.prom").chmod(0o600)
    assert samples(scrape(shared_dir))[series("node_textfile_scrape_error")] == 1


def test_the_drop_in_opens_the_directory_debians_node_exporter_reads() -> None:
    if not os.access(NODE_EXPORTER, os.X_OK):
        pytest.skip(f"{NODE_EXPORTER} missing: apt-get install prometheus-node-exporter")
    helped = subprocess.run([NODE_EXPORTER, "--help"], capture_output=True, text=True,
                            timeout=30, check=False)  # fmt: skip
    default = re.search(r'--collector\.textfile\.directory="([^"]+)"',
                        helped.stdout + helped.stderr)  # fmt: skip
    assert default, helped.stdout + helped.stderr
    # "-": a terminal without node_exporter starts all the same
    assert unit_value("ReadWritePaths", DROP_IN) == f"-{default.group(1)}"
    assert default.group(1) in unit_value("ExecStartPre", DROP_IN)


def test_the_unit_with_its_drop_in_verifies(tmp_path: Path) -> None:
    root = verify_tree(tmp_path, with_programs=True)
    shutil.copytree(DROP_IN.parent, root / "etc/systemd/system" / DROP_IN.parent.name)
    result = verify(root)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    assert DROP_IN.parent.name == f"{UNIT.name}.d"


def test_the_drop_ins_acl_lets_the_service_user_write_there(shared_dir: Path) -> None:
    """The drop-in's privileged ExecStartPre, run on a root-owned 0755 folder for user nobody
    instead of the service's: nobody then creates and renames a file there as the agent does,
    and still cannot before."""
    if os.geteuid() != 0:
        pytest.skip("an ACL for another user is root's to set")
    require("systemd-tmpfiles", "systemd")
    command = unit_value("ExecStartPre", DROP_IN)
    assert command.startswith("+-")  # root, outside the sandbox; a failure does not stop it
    words = shlex.split(command.removeprefix("+-"))
    words = [w.replace("/var/lib/prometheus/node-exporter", str(shared_dir))
              .replace("u:pos-agent:", f"u:{UNPRIVILEGED.pw_name}:") for w in words]  # fmt: skip
    temporary, target = shared_dir / ".pos-agent.prom.1.tmp", shared_dir / "pos-agent.prom"
    as_the_agent = [*as_unprivileged(), "/bin/sh", "-c",
                    f'echo x > "{temporary}" && mv "{temporary}" "{target}"']  # fmt: skip
    assert subprocess.run(as_the_agent, capture_output=True, check=False).returncode != 0
    granted = subprocess.run(words, capture_output=True, text=True, timeout=30, check=False)
    assert granted.returncode == 0, granted.stderr
    written = subprocess.run(as_the_agent, capture_output=True, text=True, check=False)
    assert written.returncode == 0, written.stderr
    assert target.read_text() == "x\n"
    assert shared_dir.stat().st_uid == 0  # the folder stays root's: only an ACL entry was added
