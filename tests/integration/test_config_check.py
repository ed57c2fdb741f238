"""``agent config check`` (DESIGN.md section 11): it accepts exactly what ``agent run`` accepts,
warns (stderr, exit 0) on a ``POS_AGENT_*`` variable that is no setting and on a configuration
others may change, and is what the unit's ``ExecReload=`` runs before the signal, so a reload
of a broken file fails and the agent goes on with what it runs.

systemd cannot be PID 1 here (no container with systemd in this suite): the reload is the
unit's own ExecReload= lines, run as systemd runs them (in order, the first failure ends the
reload and fails it), against a real ``agent run``."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from agent.cli.config_check import NOT_SETTINGS, _edits
from agent.config import ENV_PREFIX, PARSERS
from tests.packaging.common import ROOT, unit_values
from tests.processes import AGENT, AgentProcess, control, control_ready, wait_for

VALID = '[terminal]\ntid = "10000001"\nmid = "898100012340001"\n[host]\nprimary = "10.0.0.5:5000"\n'


def clean_environment(**variables: str) -> dict[str, str]:
    """This process's environment without its ``POS_AGENT_*`` variables (a developer's or CI's
    own, POS_AGENT_FUZZ say), plus ``variables``."""
    kept = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    return {**kept, **variables}


def agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=60,
                          env=env or clean_environment())  # fmt: skip


def check(config: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    return agent("config", "check", "--config", str(config), env=clean_environment(**variables))


def warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line.removeprefix("agent config check: warning: ")
        for line in result.stderr.splitlines()
        if line.startswith("agent config check: warning: ")
    ]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"  # pytest's folder: 0700, the file 0644, as installed
    path.write_text(VALID)
    path.chmod(0o644)
    return path


def test_a_clean_configuration_has_no_warning(config: Path) -> None:
    result = check(config, POS_AGENT_HOST_BACKUP="10.0.0.6:5000", POS_AGENT_STAGES="1")
    assert (result.returncode, result.stderr) == (0, "")
    assert f"configuration {config}: valid" in result.stdout
    assert "backup=10.0.0.6:5000" in result.stdout  # the variable was a setting, and applied


def test_a_mistyped_variable_is_named_with_the_setting_it_was_meant_for(config: Path) -> None:
    result = check(config, POS_AGENT_HOST_PRIMRY="10.0.0.9:5000", POS_AGENT_TERMINAL_MID="x" * 15,
                   pos_agent_journal_keep_days="30", POS_AGENT_COLOUR="yes")  # fmt: skip
    assert result.returncode == 0
    assert "primary=10.0.0.5:5000" in result.stdout  # the mistyped one changed nothing
    assert warnings(result) == [
        "POS_AGENT_COLOUR is not a setting the agent reads and is ignored; settings are "
        "POS_AGENT_<SECTION>_<KEY>, e.g. POS_AGENT_HOST_PRIMARY",
        "POS_AGENT_HOST_PRIMRY is not a setting the agent reads and is ignored; did you mean "
        "POS_AGENT_HOST_PRIMARY (host.primary)?",
        "pos_agent_journal_keep_days is not a setting the agent reads and is ignored; did you "
        "mean POS_AGENT_JOURNAL_KEEP_DAYS (journal.keep_days)?",
    ]


def test_a_configuration_others_may_change_is_warned_of(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir(mode=0o775)
    folder.chmod(0o775)  # whatever the umask
    config = folder / "agent.toml"
    config.write_text(VALID)
    config.chmod(0o666)
    result = check(config)
    assert result.returncode == 0 and f"configuration {config}: valid" in result.stdout
    file_warning, folder_warning = warnings(result)
    assert file_warning == (
        f"the configuration file {config} (mode 0666) is writable by everyone, who could point "
        f"the agent at another host; chmod go-w {config}"
    )
    assert re.fullmatch(
        rf"the directory {folder} of the configuration file \(mode 0775\) is writable by group "
        rf"\S+, who could put another configuration in its place; chmod go-w {folder}",
        folder_warning,
    )
    config.chmod(0o644)
    folder.chmod(0o755)
    assert warnings(check(config)) == []


@pytest.mark.parametrize(
    ("typed", "meant", "edits"),
    [("HOST_PRIMRY", "HOST_PRIMARY", 1), ("kitten", "sitting", 3), ("", "TLS", 3),
     ("TLS", "TLS", 0), ("HOST_TSL", "HOST_TLS", 2)],
)  # fmt: skip
def test_the_distance_of_a_typing_error(typed: str, meant: str, edits: int) -> None:
    assert _edits(typed, meant) == _edits(meant, typed) == edits


def test_the_warnings_know_every_variable_the_agent_reads() -> None:
    """Every POS_AGENT_* name in what runs on a terminal is a setting or one of NOT_SETTINGS:
    a new one cannot be warned of as a mistake."""
    settings = {f"{ENV_PREFIX}{s.upper()}_{k.upper()}" for s, keys in PARSERS.items() for k in keys}
    found = set()
    for folder in ("agent", "drivers", "firmware_hooks", "packaging/ota", "packaging/zipapp"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in ("", ".py", ".sh"):
                found |= set(re.findall(r"\bPOS_AGENT_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    assert found - settings == NOT_SETTINGS


@pytest.mark.parametrize(
    ("text", "variables"),
    [
        ('[host]\nprimary = "10.0.0.5"\n', {}),
        ("[terminal\ntid = ", {}),
        ("[hosts]\nprimary = '10.0.0.5:5000'\n", {}),
        (VALID, {"POS_AGENT_GATEWAY_TCP_PORT": "70000"}),
        (VALID.replace("[host]", "[wire]\nprofile = 'absent.toml'\n[host]"), {}),
    ],
)
def test_what_run_refuses_check_refuses_with_the_same_words(
    tmp_path: Path, text: str, variables: dict[str, str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(text)
    env = clean_environment(**variables)
    checked = agent("config", "check", "--config", str(config), env=env)
    ran = agent("run", "--config", str(config), env=env)
    assert (checked.returncode, ran.returncode) == (2, 2)
    assert checked.stderr.removeprefix("agent config: ") == ran.stderr.removeprefix("agent run: ")


def test_status_json_names_a_broken_configuration_in_an_object(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[host]\nprimary = "10.0.0.5"\n')
    result = agent("status", "--json", "--config", str(config))
    assert result.returncode == 2
    answer = json.loads(result.stdout)
    assert (answer["running"], answer["state"], answer["registered"]) == (None, "unknown", False)
    assert f"{config}: host.primary = '10.0.0.5': expected HOST:PORT" in answer["error"]
    assert answer["error"] in result.stderr  # and for a person, as without --json


def reload_as_systemd_does(config: Path, main_pid: int) -> list[subprocess.CompletedProcess]:
    """The unit's ExecReload= lines, in order, until one fails (systemd's way: the reload then
    fails, and `systemctl reload` with it). This agent runs with --config, as a drop-in that
    gives ExecStart= one gives the check the same."""
    done = []
    for line in unit_values("ExecReload"):
        command = shlex.split(line.replace("$MAINPID", str(main_pid)))
        if command[0] == "/usr/bin/agent":
            command = [AGENT, *command[1:], "--config", str(config)]
        done.append(subprocess.run(command, capture_output=True, text=True, timeout=60,
                                   env=clean_environment()))  # fmt: skip
        if done[-1].returncode != 0:
            break
    return done


def test_a_reload_of_a_broken_file_fails_and_the_agent_goes_on(tmp_path: Path, simulators) -> None:
    _, _, config = simulators
    process = AgentProcess(config, tmp_path / "agent.sock", tmp_path / "agent.log")
    log = tmp_path / "agent.log"
    try:
        process.wait_ready()
        wait_for(lambda: control_ready(tmp_path / "control.sock"), 10, "the control socket")
        original = config.read_text()
        config.write_text(original.replace('tid = "10000001"', 'tid = "1000000"'))
        checked, *signalled = reload_as_systemd_does(config, process.process.pid)
        assert checked.returncode == 2 and signalled == []  # no SIGHUP was sent
        assert f"{config}: terminal.tid = '1000000': expected 8" in checked.stderr
        assert "reloaded" not in log.read_text()  # the agent heard of no reload
        assert control(tmp_path / "control.sock", b'{"cmd": "status"}')["tid"] == "10000001"

        config.write_text(original.replace('tid = "10000001"', 'tid = "10000002"'))
        assert [r.returncode for r in reload_as_systemd_does(config, process.process.pid)] == [0, 0]
        wait_for(lambda: "configuration reloaded; changed: terminal" in log.read_text(), 10,
                 "the reload")  # fmt: skip
        assert control(tmp_path / "control.sock", b'{"cmd": "status"}')["tid"] == "10000002"
    finally:
        assert process.stop() == 0


def test_status_still_shows_the_running_agent_when_its_file_broke(tmp_path: Path, simulators):
    """A file broken after the agent read it (a refused reload): `agent status` names what is
    wrong and still shows the agent, which runs on the file it read. The control socket is
    where a file without control.socket puts it (the runtime directory)."""
    _, _, config = simulators
    runtime = tmp_path / "run"
    config.write_text(re.sub(r'\[control\]\nsocket = ".*"\n', "", config.read_text()))
    env = clean_environment(RUNTIME_DIRECTORY=str(runtime))
    process = AgentProcess(config, tmp_path / "agent.sock", tmp_path / "agent.log", env)
    try:
        process.wait_ready()
        wait_for(lambda: control_ready(runtime / "control.sock"), 10, "the control socket")
        config.write_text(config.read_text().replace('tid = "10000001"', 'tid = "1000000"'))
        result = agent("status", "--json", "--config", str(config), env=env)
        status = json.loads(result.stdout)
        assert (status["running"], status["tid"]) == (True, "10000001")
        assert f"{config}: terminal.tid = '1000000': expected 8" in status["config_error"]
        assert "the running agent goes on with the file it read" in result.stderr
        text = agent("status", "--config", str(config), env=env)
        assert "TID 10000001" in text.stdout and "terminal.tid" in text.stderr
    finally:
        assert process.stop() == 0
    # no agent to show: the broken file is the answer, as before
    result = agent("status", "--json", "--config", str(config), env=env)
    assert result.returncode == 2 and "terminal.tid" in json.loads(result.stdout)["error"]
