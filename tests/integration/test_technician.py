"""Technicians without root (DESIGN.md section 10), as a real non-root process: uid nobody, given
group pos-agent-tech by setpriv as a login would. Such a technician gets ``agent status``,
``status --json``, ``selftest`` and ``journal`` from a running ``agent run`` and may not sign in
or provision; anyone else gets errors that say who may. With no agent running, the technician
reads the service's state through the state directory's ACL (the lines of
packaging/systemd/pos-agent.tmpfiles, applied by the real systemd-tmpfiles) and changes nothing
the service owns; never the replay key. The tests run as root (CI and these machines do): the
agent runs as root, the technician is started as another user."""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.journal import Journal
from agent.service.control import TECHNICIAN_GROUP, ControlServer
from tests.packaging.common import PACKAGING, ROOT, require, unit_value
from tests.processes import (
    AgentProcess,
    HostProcess,
    ModuleProcess,
    control,
    control_ready,
    downloaded,
    pay,
    wait_for,
)

NOBODY = 65534
DEBIAN_PYTHON = "/usr/bin/python3"
TMPFILES = PACKAGING / "systemd/pos-agent.tmpfiles"
# python -c: each command after the socket's path asked in turn on one connection, each answer
# printed on a line of its own
ASK_EACH = """
import json, socket, sys
with socket.socket(socket.AF_UNIX) as connection:
    connection.connect(sys.argv[1])
    answers = connection.makefile("rb")
    for command in sys.argv[2:]:
        connection.sendall(json.dumps({"cmd": command}).encode() + b"\\n")
        print(answers.readline().decode().strip())
"""

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="starting a process as another user needs root"
)


@pytest.fixture(scope="module")
def technicians() -> Iterator[int]:
    """The id of group pos-agent-tech: this machine's, else one made for these tests (and
    removed after them)."""
    if TECHNICIAN_GROUP in {group.gr_name for group in grp.getgrall()}:
        yield grp.getgrnam(TECHNICIAN_GROUP).gr_gid
        return
    subprocess.run([require("groupadd", "passwd"), "--system", TECHNICIAN_GROUP], check=True,
                   timeout=30)  # fmt: skip
    try:
        yield grp.getgrnam(TECHNICIAN_GROUP).gr_gid
    finally:
        subprocess.run([require("groupdel", "passwd"), TECHNICIAN_GROUP], timeout=30)


@dataclass
class Terminal:
    folder: Path
    config: Path
    state: Path
    control_socket: Path
    host: HostProcess
    agent: AgentProcess | None = None

    def start(self) -> None:
        """The agent, signed in, as the service runs it (here as root)."""
        self.agent = AgentProcess(
            self.config, self.folder / "run/agent.sock", self.folder / "agent.log"
        )
        self.agent.wait_ready()
        wait_for(lambda: control_ready(self.control_socket), 10, "the control socket")
        wait_for(lambda: self.status()["signed_in"], 10, "the sign-in at start")

    def stop(self) -> None:
        if self.agent is not None:
            assert self.agent.stop() == 0
            self.agent = None

    def status(self) -> dict:
        """As root asks."""
        return control(self.control_socket, b'{"cmd": "status"}')


def open_folder() -> Path:
    """A folder outside pytest's own (0700, root's only), where another user may walk."""
    folder = Path(tempfile.mkdtemp(prefix="pos-agent-tech-"))
    folder.chmod(0o755)
    return folder


def state_directory_as_at_boot(state: Path) -> None:
    """What systemd-tmpfiles-setup does with the package's tmpfiles.d lines at boot, for
    ``state`` and with root as the service's user (which the agent runs as here)."""
    lines = TMPFILES.read_text().replace("/var/lib/pos-agent", str(state))
    conf = state.with_name("tmpfiles.conf")
    conf.write_text(lines.replace("pos-agent pos-agent", "root root"))
    made = subprocess.run([require("systemd-tmpfiles", "systemd"), "--create", str(conf)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    # tmpfiles only logs an ACL it could not set: the directory's must be there
    assert made.returncode == 0, made.stderr
    assert "system.posix_acl_default" in os.listxattr(state), made.stderr


@pytest.fixture
def terminal(technicians: int) -> Iterator[Terminal]:
    """A terminal laid out as the packages lay it out, in a folder outside pytest's own (0700,
    root's only): the state directory made by the package's tmpfiles.d lines (with root as
    the service's user, which the agent runs as here), a runtime directory with the unit's
    mode, the simulators, the configuration (0644, as the packages install it)."""
    folder = open_folder()
    state, run = folder / "state", folder / "run"
    state_directory_as_at_boot(state)
    run.mkdir(mode=int(unit_value("RuntimeDirectoryMode"), 8))
    host, module = HostProcess(folder), ModuleProcess(folder)
    config = folder / "agent.toml"
    config.write_text(
        f'[terminal]\ntid = "10000001"\nmid = "898100012340001"\n'
        f'[host]\nprimary = "{host.listen}"\nresponse_timeout = 2\nconnect_timeout = 1\n'
        f'[module]\nurl = "{module.path}"\nsocket = "{run / "module.sock"}"\n'
        f'[gateway]\nsocket = "{run / "agent.sock"}"\n'
        f'[control]\nsocket = "{run / "control.sock"}"\n'
        f'[journal]\npath = "{state / "journal.sqlite3"}"\n'
        f'[hooks]\ndirectory = "{folder / "hooks.d"}"\n'
    )
    config.chmod(0o644)
    downloaded(state)  # the session's downloads: a healthy terminal has them
    rig = Terminal(folder, config, state, run / "control.sock", host)
    try:
        rig.start()
        yield rig
    finally:
        rig.stop()
        host.stop()
        module.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def interpreter() -> tuple[list[str], dict[str, str]]:
    """How another user runs this checkout's agent: with this interpreter where that user may
    (a venv of Debian's python3), else with Debian's python3 and this checkout and the venv's
    packages on its path (a pyenv interpreter under /root, 0700, is closed to other users)."""
    for command, env in (
        ([sys.executable], {}),
        ([DEBIAN_PYTHON], {"PYTHONPATH": f"{ROOT}:{sysconfig.get_paths()['purelib']}"}),
    ):
        probe = as_user([NOBODY], [*command, "-c", "import agent.cli"], env)
        if probe.returncode == 0:
            return command, env
    pytest.skip(f"uid {NOBODY} can run neither {sys.executable} nor {DEBIAN_PYTHON} with "
                f"{ROOT} (its folders must be open to other users)")  # fmt: skip


def as_user(groups: list[int], command: list[str], env: dict[str, str], cwd: str = "/"):
    """``command`` as uid nobody with exactly ``groups`` (the first its primary group)."""
    primary, *supplementary = groups
    membership = (
        [f"--groups={','.join(map(str, supplementary))}"] if supplementary else ["--clear-groups"]
    )
    return subprocess.run(
        [require("setpriv", "util-linux"), f"--reuid={NOBODY}", f"--regid={primary}",
         *membership, *command],
        capture_output=True, text=True, timeout=120, cwd=cwd,
        env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": "/nonexistent", **env},
    )  # fmt: skip


def agent_as(groups: list[int], interpreter: tuple[list[str], dict[str, str]], config: Path):
    """``agent ARGS --config CONFIG`` as uid nobody with ``groups``."""
    command, env = interpreter

    def agent(*args: str) -> subprocess.CompletedProcess[str]:
        return as_user(groups, [*command, "-m", "agent", *args, "--config", str(config)], env)

    return agent


@pytest.fixture
def technician(interpreter, technicians: int, terminal: Terminal):
    """``agent ARGS`` as a member of group pos-agent-tech."""
    return agent_as([NOBODY, technicians], interpreter, terminal.config)


@pytest.fixture
def outsider(interpreter, terminal: Terminal):
    """``agent ARGS`` as nobody, in no group of the agent's."""
    return agent_as([NOBODY], interpreter, terminal.config)


def test_the_control_socket_is_the_technicians_groups(terminal: Terminal, technicians) -> None:
    status = terminal.control_socket.stat()
    assert (stat.S_IMODE(status.st_mode), status.st_gid) == (0o660, technicians)


def test_a_technician_gets_status_selftest_and_journal_from_the_service(
    terminal: Terminal, technician
) -> None:
    status = technician("status")
    assert (status.returncode, status.stderr) == (0, "")
    assert "state       registered" in status.stdout
    assert "terminal    TID 10000001, MID 898100012340001" in status.stdout

    status = technician("status", "--json")
    assert (status.returncode, status.stderr) == (0, "")
    answer = json.loads(status.stdout)
    assert (answer["running"], answer["registered"], answer["tid"]) == (True, True, "10000001")

    selftest = technician("selftest", "--json")
    assert (selftest.returncode, selftest.stderr) == (0, ""), selftest.stdout
    report = json.loads(selftest.stdout)
    assert report["ok"] and {check["status"] for check in report["checks"]} == {"ok"}
    selftest = technician("selftest", "--lang", "en")
    assert selftest.returncode == 0 and "(asked the running agent)" in selftest.stdout

    journal = technician("journal", "--json")
    assert (journal.returncode, journal.stderr) == (0, "")
    assert json.loads(journal.stdout)[0]["text"].startswith("0800 STAN ")


def test_a_technician_may_not_sign_in_provision_or_send_an_echo(
    terminal: Terminal, technician, interpreter, technicians
) -> None:
    signed_in = terminal.status()["signed_in"]
    # each command's own exit for "the agent refused": 1 for a remedy, 2 for the echo test
    for command, refused in (("signin", 1), ("provision", 1), ("echo", 2)):
        result = technician(command)
        assert result.returncode == refused, (command, result.stdout, result.stderr)
        assert (
            f"agent {command}: {command} is for root and the service's user; members of group "
            f"{TECHNICIAN_GROUP} may ask journal, params, selftest, status"
        ) in result.stderr
    assert terminal.status()["signed_in"] == signed_in  # no sign-in happened
    # on the socket itself, one connection: what is not a read is refused, and reads go on
    python, env = interpreter
    asking = [*python, "-c", ASK_EACH, str(terminal.control_socket)]
    asked = as_user([NOBODY, technicians], [*asking, "stages", "signin", "params", "status"], env)
    stages, signin, params, status = map(json.loads, asked.stdout.splitlines())
    assert not stages["ok"] and not signin["ok"]
    assert stages["error"].startswith("stages is for root and the service's user")
    assert params["ok"] and status["ok"]


def test_anyone_else_is_told_who_may(terminal: Terminal, outsider) -> None:
    told = f"permission denied: run as root, or as a member of group {TECHNICIAN_GROUP}"
    status = outsider("status")
    assert status.returncode == 2 and told in status.stderr, status.stderr
    status = outsider("status", "--json")
    assert status.returncode == 2
    answer = json.loads(status.stdout)  # an object all the same
    assert (answer["running"], answer["state"], answer["registered"]) == (None, "unknown", False)
    assert told in answer["error"]
    for command, refused in (("selftest", 2), ("journal", 2), ("signin", 1)):
        result = outsider(command)
        assert result.returncode == refused and told in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr


def test_with_no_agent_running_a_technician_reads_the_state_and_changes_nothing(
    terminal: Terminal, technician, outsider, interpreter, technicians
) -> None:
    assert pay(terminal.folder / "run/agent.sock").text(39) == "00"  # the replay key is made
    terminal.stop()
    for left in (terminal.folder / "run").iterdir():  # systemd removes RuntimeDirectory= too
        left.unlink()
    before = {path.name: path.stat() for path in terminal.state.iterdir()}
    assert "journal.sqlite3.replay-key" in before

    journal = technician("journal", "--json")
    assert (journal.returncode, journal.stderr) == (0, "")
    assert [e for e in json.loads(journal.stdout) if e["text"].startswith("0200 STAN ")]
    selftest = technician("selftest", "--json", "--only", "storage")
    assert (selftest.returncode, selftest.stderr) == (0, ""), selftest.stdout
    [storage] = json.loads(selftest.stdout)["checks"]
    assert storage["status"] == "ok" and "0 reversal(s) queued" in storage["detail"]

    after = {path.name: path.stat() for path in terminal.state.iterdir()}
    assert after.keys() == before.keys()
    for name, was in before.items():
        now = after[name]
        assert (now.st_mtime_ns, now.st_size, now.st_mode) == (
            was.st_mtime_ns, was.st_size, was.st_mode), name  # fmt: skip

    # what the service keeps to itself stays its own: the key of the card digests, the lock
    python, env = interpreter
    for name in ("journal.sqlite3.replay-key", "journal.sqlite3.lock"):
        reading = f"open({str(terminal.state / name)!r}, 'rb')"
        opened = as_user([NOBODY, technicians], [*python, "-c", reading], env)
        assert "PermissionError" in opened.stderr, name

    # and who is not a technician reads none of it
    journal = outsider("journal")
    assert journal.returncode == 1
    assert (
        f"{terminal.state / 'journal.sqlite3'}: permission denied (root and members of group "
        f"{TECHNICIAN_GROUP} may read it)"
    ) in journal.stderr
    selftest = outsider("selftest", "--only", "storage")
    assert selftest.returncode == 2
    assert "agent selftest: no agent running, and " in selftest.stderr
    assert "permission denied" in selftest.stderr and "Traceback" not in selftest.stderr


def test_a_journal_made_before_the_acl_is_the_technicians_after_the_next_boot(
    interpreter, technicians: int
) -> None:
    """An upgraded terminal's journal was made 0600, before its directory had the ACL: the
    tmpfiles lines run at the next boot open it to the group, to read."""
    folder = open_folder()
    try:
        state = folder / "state"
        state.mkdir(mode=0o700)
        previous = os.umask(0o077)  # the unit's
        try:
            Journal(state / "journal.sqlite3").close()
        finally:
            os.umask(previous)
        config = folder / "agent.toml"
        config.write_text(f'[journal]\npath = "{state / "journal.sqlite3"}"\n'
                          f'[control]\nsocket = "{folder / "control.sock"}"\n')  # fmt: skip
        config.chmod(0o644)
        journal = agent_as([NOBODY, technicians], interpreter, config)
        assert journal("journal").returncode == 1  # before: not even the directory
        state_directory_as_at_boot(state)
        read = journal("journal", "--json")
        assert (read.returncode, read.stdout.strip(), read.stderr) == (0, "[]", "")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_socket_stays_the_services_where_there_is_no_technicians_group(
    tmp_path: Path, monkeypatch
) -> None:
    import asyncio

    import agent.service.control as control_module

    monkeypatch.setattr(control_module, "TECHNICIAN_GROUP", "pos-agent-no-such-group")

    async def status(_: dict) -> dict:
        return {}

    async def serve() -> int:
        server = ControlServer({"status": status})
        await server.serve(tmp_path / "control.sock")
        try:
            return stat.S_IMODE((tmp_path / "control.sock").stat().st_mode)
        finally:
            await server.close()

    assert asyncio.run(serve()) == 0o600
