"""The command line on a technician's console (DESIGN.md section 11): every command under an
ASCII and a GBK console without a traceback, one language per run, colour only on a terminal
without NO_COLOR, progress for work over a second. Real subprocesses; terminals are real ptys."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import __version__

AGENT = Path(sys.executable).with_name("agent")
HEX_0800 = (
    "0800" + "0020000000C00012" + "000001" + "3130303030303031" + "383938313030303132333430303031"
)


def config(tmp_path: Path, host: str = "127.0.0.1:9") -> Path:
    """A terminal with no module, an unreachable host and a journal that cannot be created:
    every command has something to fail at."""
    path = tmp_path / "agent.toml"
    path.write_text(
        '[terminal]\ntid = "10000001"\nmid = "898100012340001"\n'
        f'[host]\nprimary = "{host}"\nresponse_timeout = 2\nconnect_timeout = 1\n'
        '[module]\nurl = "/nonexistent/card-module"\n'
        '[journal]\npath = "/proc/nonexistent/journal.sqlite3"\n'
        f'[control]\nsocket = "{tmp_path / "control.sock"}"\n',
        encoding="utf-8",
    )
    return path


def commands(conf: Path) -> list[list[str]]:
    c = ["--config", str(conf)]
    return [
        ["--help"], ["--version"], ["explain", "97"], ["explain", "97", "--json"],
        ["explain", "--requirement", "all"], ["decode", HEX_0800], ["decode", "zz"],
        ["status", *c], ["status", "--json", *c], ["journal", *c], ["params", *c],
        ["config", "check", *c], ["selftest", *c], ["selftest", "--json", *c],
        ["selftest", "--lang", "zh", *c], ["signin", *c], ["provision", *c], ["echo", *c],
        ["run", "--config", "/nonexistent.toml"], ["sim", "tms", "--listen", "nowhere"],
        ["fleet", "--broker", "mqtt://127.0.0.1:9"], ["fleet", "--broker", "http://nowhere"],
    ]  # fmt: skip


def run(args: list[str], encoding: str, lang: str = "C", **env: str):
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
             "LANG": lang, "PYTHONIOENCODING": encoding, **env}  # fmt: skip
    return subprocess.run(
        [str(AGENT), *args], capture_output=True, timeout=60, check=False, env=clean
    )


@pytest.mark.parametrize("encoding", ["ascii", "gbk"])
def test_every_command_runs_without_a_traceback(tmp_path, encoding) -> None:
    for args in commands(config(tmp_path)):
        result = run(args, encoding, lang="zh_CN.UTF-8")
        stderr = result.stderr.decode(encoding)
        assert "Traceback" not in stderr, (args, stderr)
        assert result.returncode in (0, 1, 2, 3), (args, result.returncode, stderr)
        result.stdout.decode(encoding)  # what was written is in the console's encoding


def test_an_ascii_console_gets_english_only(tmp_path) -> None:
    conf = config(tmp_path)
    explain = run(["explain", "97"], "ascii", lang="zh_CN.UTF-8").stdout.decode("ascii")
    assert explain.startswith("97  terminal not registered") and "?" not in explain
    selftest = run(["selftest", "--config", str(conf)], "ascii", lang="zh_CN.UTF-8")
    text = selftest.stdout.decode("ascii")
    assert "self-check" in text and "[FAIL]" in text and "?" not in text
    report = json.loads(run(["selftest", "--json", "--config", str(conf)], "ascii").stdout)
    assert report["checks"][0]["summary"].isascii()
    # Chinese asked for on a console that cannot show it: English, not question marks; the
    # JSON carries it in its escapes
    asked = run(["selftest", "--lang", "zh", "--config", str(conf)], "ascii", lang="C")
    assert "self-check" in asked.stdout.decode("ascii") and b"?" not in asked.stdout
    report = json.loads(
        run(["selftest", "--json", "--lang", "zh", "--config", str(conf)], "ascii").stdout
    )
    assert not report["checks"][0]["summary"].isascii()


def test_a_gbk_console_gets_chinese_in_its_own_encoding(tmp_path) -> None:
    result = run(["selftest", "--config", str(config(tmp_path))], "gbk", lang="zh_CN.GBK")
    text = result.stdout.decode("gbk")
    assert "自检" in text and "加密模块无响应" in text
    assert "[FAIL]" in text  # GBK has no ✓ and ✗
    assert "?" not in text


def test_a_chinese_run_has_no_english_inside_a_chinese_line(tmp_path) -> None:
    """The system's English error texts go into the detail, on a line of their own; paths and
    configuration keys (module.url) are names, not English."""
    result = run(["selftest", "--json", "--lang", "zh", "--config", str(config(tmp_path))],
                 "utf-8")  # fmt: skip
    for check in json.loads(result.stdout)["checks"]:
        text = re.sub(r"\S*[/.]\S*", "", check["summary"] + " " + check["remedy"])
        words = re.findall(r"[a-z]{3,}", text)
        assert not [w for w in words if w not in ("systemctl", "pos", "agent", "start")], check


def test_selftest_json_names_the_terminal_the_version_the_time_and_each_finding(tmp_path) -> None:
    report = json.loads(run(["selftest", "--json", "--config", str(config(tmp_path))], "utf-8")
                        .stdout)  # fmt: skip
    assert set(report) == {"ok", "duration_ms", "tid", "version", "at", "checks"}
    assert (report["tid"], report["version"]) == ("10000001", __version__)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", report["at"])
    findings = {c["id"]: c["finding"] for c in report["checks"]}
    assert findings["provisioning"] == "provisioning.ok"
    assert findings["module"] == "module.module-unreachable"
    assert findings["network"] == "network.host-unreachable"
    assert all(f.startswith(f"{i}.") for i, f in findings.items())


def on_a_terminal(args: list[str], **env: str) -> tuple[int, str]:
    """Run with stdout and stderr on a real pty; what the terminal showed."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [str(AGENT), *args], stdout=slave, stderr=slave, stdin=subprocess.DEVNULL,
        env={"PATH": os.environ["PATH"], "HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm",
             **env},
    )  # fmt: skip
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(master)
    return process.wait(timeout=10), shown.decode("utf-8", "replace")


def test_colour_only_on_a_terminal_and_without_no_color(tmp_path) -> None:
    args = ["selftest", "--config", str(config(tmp_path))]
    _, coloured = on_a_terminal(args)
    assert "\x1b[31m[✗]\x1b[0m" in coloured  # a failed check in red
    _, plain = on_a_terminal(args, NO_COLOR="1")
    assert "\x1b[" not in plain and "[✗]" in plain
    piped = run(args, "utf-8").stdout.decode()
    assert "\x1b[" not in piped


def test_work_over_a_second_shows_progress_on_a_terminal_only(tmp_path) -> None:
    """An echo to a host that takes the connection and never answers waits for the response
    timeout (2 s): the terminal sees what is going on; a pipe gets only the result."""
    silent = socket.create_server(("127.0.0.1", 0))
    conf = config(tmp_path, host=f"127.0.0.1:{silent.getsockname()[1]}")
    conf.write_text(conf.read_text().replace(
        '/proc/nonexistent/journal.sqlite3', str(tmp_path / "journal.sqlite3")))  # fmt: skip
    try:
        code, shown = on_a_terminal(["echo", "--config", str(conf)])
        piped = run(["echo", "--config", str(conf)], "utf-8")
    finally:
        silent.close()
    assert code == 1
    assert "agent echo: waiting for the host (1 s)" in shown and "\r" in shown
    assert "waiting for the host" not in piped.stderr.decode()


def test_a_direct_echo_waits_for_an_agent_that_holds_the_journal(tmp_path) -> None:
    """An agent still starting holds its lock before it serves its control socket: an echo
    that would number itself from the journal then must not take a STAN the agent takes too."""
    from agent.config import load
    from agent.service.instance import InstanceLock

    conf = config(tmp_path, host="127.0.0.1:9")
    conf.write_text(conf.read_text().replace(
        '/proc/nonexistent/journal.sqlite3', str(tmp_path / "journal.sqlite3")))  # fmt: skip
    with InstanceLock.of(load(conf)):
        result = run(["echo", "--config", str(conf)], "utf-8")
    assert result.returncode == 1
    assert "is locked by process" in result.stderr.decode()
    assert not (tmp_path / "journal.sqlite3").exists()
