"""``agent run`` as systemd runs it: a real process, real sockets, the simulators as processes.
systemd itself cannot be PID 1 here: a Unix datagram socket in the test stands in for its
NOTIFY_SOCKET, which is all the sd_notify protocol needs."""

import concurrent.futures
import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from drivers.framing import Frame
from drivers.module import Command
from tests.processes import (
    AGENT,
    AgentProcess,
    control,
    control_ready,
    downloaded,
    pay,
    wait_for,
)


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=60)


def start(tmp_path, config, env=None) -> AgentProcess:
    """An agent that has signed in; one that does not get there is stopped, not left behind.
    A restart in the same folder finds the last run's socket files until the new agent has
    replaced them: only an answer counts."""
    process = AgentProcess(config, tmp_path / "agent.sock", tmp_path / "agent.log", env)

    def signed_in() -> bool:
        try:
            return control(tmp_path / "control.sock", b'{"cmd": "status"}')["signed_in"]
        except OSError:  # not served yet (or the last run's file, about to be replaced)
            return False

    try:
        process.wait_ready()
        wait_for(signed_in, 10, "the sign-in at start")
    except BaseException:
        process.stop()
        raise
    return process


def test_status_selftest_signin_and_echo_go_through_the_control_socket(tmp_path, simulators):
    _, _, config = simulators
    downloaded(config.parent)
    agent = start(tmp_path, config)
    try:
        status = json.loads(agent_cli("status", "--json", "--config", str(config)).stdout)
        assert status["state"] == "registered" and status["host"]["connected"]
        assert set(status["signed_in"]["kcvs"]) == {"PIK", "MAK"}
        result = agent_cli("selftest", "--json", "--config", str(config))
        assert result.returncode == 0, result.stdout  # the module is the agent's: it was asked
        assert all(c["status"] == "ok" for c in json.loads(result.stdout)["checks"])
        assert agent_cli("signin", "--config", str(config)).returncode == 0
        echo = agent_cli("echo", "--config", str(config))
        assert echo.returncode == 0 and ": 00 in " in echo.stdout
    finally:
        assert agent.stop() == 0


def test_control_socket_bad_input_gets_an_error_and_the_agent_lives(tmp_path, simulators):
    _, _, config = simulators
    agent = start(tmp_path, config)
    path = tmp_path / "control.sock"
    try:
        assert control(path, b"not json")["error"].startswith("bad request: not JSON")
        assert "expected a JSON object" in control(path, b"[1, 2]")["error"]
        assert "unknown command 'reboot'" in control(path, b'{"cmd": "reboot"}')["error"]
        deep = b"[" * 20_000 + b"]" * 20_000  # under the line limit, deeper than any parser
        assert "nested too deeply" in control(path, deep)["error"]
        assert '"only" must be a list' in control(path, b'{"cmd": "selftest", "only": 5}')["error"]
        unknown = control(path, b'{"cmd": "selftest", "only": ["clock", "nope"]}')
        assert unknown["ok"] is False and "no such check: nope; expected " in unknown["error"]
        with socket.socket(socket.AF_UNIX) as sock:  # a line over 64 KiB: the connection closes
            sock.connect(str(path))
            sock.sendall(b"x" * 70_000 + b"\n")
            assert sock.makefile("rb").readline() == b""
        assert (
            '"since" must be epoch seconds'
            in control(path, b'{"cmd": "journal", "since": "yesterday"}')["error"]
        )
        journal = control(path, b'{"cmd": "journal", "since": 0}')
        assert journal["entries"][0]["text"].startswith("0800 STAN ")
        assert journal["left_out"] == 0
        assert control(path, b'{"cmd": "status"}')["ok"]
        assert control(path, b'{"cmd": "params"}')["parameters"] == {}
        assert pay(tmp_path / "agent.sock").text(39) == "00"
        module_socket = tmp_path / "module.sock"
        assert stat.S_IMODE(module_socket.stat().st_mode) == 0o660
        with socket.socket(socket.AF_UNIX) as sock:  # the app's way to the module: PING
            sock.settimeout(10)
            sock.connect(str(module_socket))
            sock.sendall(Frame(7, Command.PING).encode())
            answer = sock.recv(64)
            assert answer[3:6] == bytes([7, Command.PING | 0x80, 0])  # app's SEQ, status ok
    finally:
        assert agent.stop() == 0


def notify_socket(tmp_path) -> tuple[Path, socket.socket, list[str]]:
    """Stands in for systemd (PID 1 cannot be had here): a datagram socket for NOTIFY_SOCKET,
    its messages collected in a thread (the first 50)."""
    notify_path = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(10)
    messages: list[str] = []

    def receive() -> None:
        while len(messages) < 50:
            try:
                messages.append(listener.recv(4096).decode())
            except OSError:
                return

    threading.Thread(target=receive, daemon=True).start()
    return notify_path, listener, messages


def test_sd_notify_ready_status_and_watchdog(tmp_path, simulators):
    _, _, config = simulators
    notify_path, listener, messages = notify_socket(tmp_path)
    env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
    agent = start(tmp_path, config, env)
    try:
        wait_for(lambda: sum("WATCHDOG=1" in m for m in messages) >= 3, 10, "watchdog pings")
        assert any(m.startswith("READY=1\nSTATUS=ready") for m in messages)
        assert any("STATUS=registered, host 127.0.0.1:" in m for m in messages)
    finally:
        assert agent.stop() == 0
        wait_for(lambda: any(m.startswith("STOPPING=1") for m in messages), 5, "STOPPING=1")
        listener.close()


def test_status_follows_the_state_without_waiting_for_the_watchdog(tmp_path, simulators):
    """No watchdog here: every STATUS= after READY comes from a change of state, at once (a
    recovery starts and ends) rather than with the next watchdog ping up to 15 s later."""
    host, _, config = simulators
    notify_path, listener, messages = notify_socket(tmp_path)
    agent = start(tmp_path, config, {"NOTIFY_SOCKET": str(notify_path)})
    try:
        wait_for(lambda: any("STATUS=registered" in m for m in messages), 10, "registered")
        host.post("/terminals/10000001/cancel")  # 97 for good: recovering, then unregistered
        assert pay(tmp_path / "agent.sock").text(39) == "97"
        wait_for(lambda: any("STATUS=unregistered (host.97-after-signin)" in m for m in messages),
                 5, "STATUS=unregistered")  # fmt: skip
        assert any(m.startswith("STATUS=recovering (host.97)") for m in messages)
        assert not any("WATCHDOG=1" in m for m in messages)
    finally:
        assert agent.stop() == 0
        listener.close()


def test_sighup_reloads_and_garbage_keeps_the_old_configuration(tmp_path, simulators):
    _, _, config = simulators
    agent = start(tmp_path, config)
    path = tmp_path / "control.sock"
    try:
        original = config.read_text()
        config.write_text(original.replace('mid = "898100012340001"', 'mid = "898100012340001"\n'
                                           'support_phone = "95516"'))  # fmt: skip
        os.kill(agent.process.pid, signal.SIGHUP)
        log = tmp_path / "agent.log"
        wait_for(lambda: "changed: terminal" in log.read_text(), 10, "the reload")
        config.write_text("[terminal\ntid=")
        os.kill(agent.process.pid, signal.SIGHUP)
        wait_for(lambda: "configuration not reloaded" in log.read_text(), 10, "the refusal")
        assert "not valid TOML" in log.read_text()
        assert control(path, b'{"cmd": "status"}')["tid"] == "10000001"
        assert pay(tmp_path / "agent.sock").text(39) == "00"
    finally:
        assert agent.stop() == 0


def test_sigterm_lets_the_purchase_in_flight_finish(tmp_path, simulators):
    host, _, config = simulators
    agent = start(tmp_path, config)
    host.post("/faults", {"kind": "late", "delay": 1.0})
    answers = []
    thread = threading.Thread(target=lambda: answers.append(pay(tmp_path / "agent.sock")))
    thread.start()
    time.sleep(0.4)  # the purchase is at the host
    assert agent.stop() == 0
    thread.join(10)
    assert answers and answers[0].text(39) == "00"
    [approved] = host.state()["purchases"].values()
    assert not approved["reversed"]


def test_journal_shows_the_recovery_timeline(tmp_path, simulators):
    host, _, config = simulators
    agent = start(tmp_path, config)
    try:
        host.post("/terminals/10000001/forget")
        assert pay(tmp_path / "agent.sock").text(39) == "00"
    finally:
        assert agent.stop() == 0
    timeline = agent_cli("journal", "--config", str(config)).stdout
    lines = [line.split("  ", 1)[1] for line in timeline.splitlines()]
    recovery = [line for line in lines if not line.startswith(("0800", "signed in"))]
    assert recovery[0].startswith("0200 STAN ") and "97 (terminal not registered" in recovery[0]
    assert recovery[1] == "host refused: 97 (terminal not registered (terminal id not found))"
    assert recovery[2].startswith("self-check in ")
    assert recovery[3] == "plan: sign-in, then provision"
    assert recovery[4].startswith("remedy sign-in done: signed in as TID 10000001")
    assert "completed, 00 (approved)" in recovery[5]
    assert recovery[6] == "retried after sign-in: 00 (approved)"
    assert recovery[7].startswith("recovered: 00 (approved), ")
    assert "card 621700*********0123" in recovery[0]
    as_json = json.loads(agent_cli("journal", "--json", "--since", "1h", "--config",
                                   str(config)).stdout)  # fmt: skip
    assert {e["kind"] for e in as_json} >= {"transaction", "recovery.plan"}


def test_journal_without_the_service_says_what_a_crash_left_unseen(tmp_path, simulators):
    """A look at the journal while no service runs reads the file as it is (it creates and
    changes nothing): after a crash the latest changes are still in the -wal file, and the
    technician is told they are not shown (a pending sale, a reversal to be, may be there)."""
    _, _, config = simulators
    agent = start(tmp_path, config)
    assert pay(tmp_path / "agent.sock").text(39) == "00"
    agent.kill()
    assert (tmp_path / "journal.sqlite3-wal").stat().st_size > 0
    result = agent_cli("journal", "--config", str(config))
    assert "journal.sqlite3-wal (the service stopped without taking them" in result.stderr
    agent = start(tmp_path, config)  # takes them in
    assert agent.stop() == 0
    result = agent_cli("journal", "--config", str(config))
    assert result.returncode == 0 and "not shown" not in result.stderr


def test_status_exit_codes_are_systemctls(tmp_path, simulators):
    """0 running and registered, 1 running and not (never signed in), 3 no service; --json
    always prints an object (DESIGN.md section 11)."""
    _, _, config = simulators
    result = agent_cli("status", "--config", str(config))
    assert result.returncode == 3 and "no agent running" in result.stderr
    result = agent_cli("status", "--json", "--config", str(config))
    assert result.returncode == 3
    assert json.loads(result.stdout) == {
        "running": False, "state": "not-running", "registered": False, "tid": "10000001",
        "control_socket": str(tmp_path / "control.sock"),
    }  # fmt: skip
    agent = start(tmp_path, config)
    try:
        result = agent_cli("status", "--json", "--config", str(config))
        assert result.returncode == 0
        assert json.loads(result.stdout)["registered"] is True
    finally:
        assert agent.stop() == 0
    # a host nobody listens at: the service runs, its sign-in never succeeds
    config.write_text(re.sub(r'primary = ".*"', 'primary = "127.0.0.1:1"', config.read_text()))
    agent = AgentProcess(config, tmp_path / "agent.sock", tmp_path / "agent.log")
    try:
        agent.wait_ready()
        wait_for(lambda: control_ready(tmp_path / "control.sock"), 10, "the control socket")
        result = agent_cli("status", "--json", "--config", str(config))
        assert result.returncode == 1, result.stdout  # it runs, but no sign-in succeeded
        assert json.loads(result.stdout)["state"] == "not-signed-in"
        assert agent_cli("status", "--config", str(config)).returncode == 1
    finally:
        assert agent.stop() == 0


def test_a_terminal_without_hosts_runs_and_waits(tmp_path, simulators):
    """No host configured (a terminal not provisioned yet): the service runs instead of
    crash-looping under systemd; payments get a local 96 saying why; a reload with hosts puts
    it to work."""
    _, _, config = simulators
    with_hosts = config.read_text()
    lines = [line for line in with_hosts.splitlines() if not line.startswith("primary =")]
    config.write_text("\n".join(lines) + "\n")
    agent = AgentProcess(config, tmp_path / "agent.sock", tmp_path / "agent.log")
    try:
        agent.wait_ready()
        wait_for(lambda: control_ready(tmp_path / "control.sock"), 10, "the control socket")
        answer = pay(tmp_path / "agent.sock")
        assert answer.text(39) == "96"
        assert answer.text(63).startswith(
            "AGENT provisioning.unprovisioned: no host configured (host.primary)"
        )
        status = control(tmp_path / "control.sock", b'{"cmd": "status"}')
        assert status["ok"] and status["signed_in"] is None
        config.write_text(with_hosts)
        os.kill(agent.process.pid, signal.SIGHUP)
        wait_for(lambda: "changed: host" in (tmp_path / "agent.log").read_text(), 10, "reload")
        assert agent_cli("signin", "--config", str(config)).returncode == 0
        assert pay(tmp_path / "agent.sock").text(39) == "00"
    finally:
        assert agent.stop() == 0


def test_a_reload_that_fails_unexpectedly_still_tells_systemd_ready(tmp_path, caplog):
    """RELOADING=1 is always followed by READY=1, or systemd shows the unit reloading forever."""
    import asyncio

    from agent.service.daemon import _reloader
    from tests.integration.gateway_rig import gateway_rig

    def broken_reload():
        raise RuntimeError("a bug in the reload path")

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            said: list[tuple[str, ...]] = []
            _reloader(rig.agent, broken_reload, lambda *lines: said.append(lines))()
            assert said[0] == ("RELOADING=1",)
            assert said[-1][0] == "READY=1" and said[-1][1].startswith("STATUS=registered")

    asyncio.run(scenario())
    assert "configuration reload failed; the agent goes on as it was" in caplog.text


def test_a_background_loop_that_fails_is_logged_and_started_again(caplog):
    """The reversal sender, the periodic check and the start-up sign-in run supervised."""
    import asyncio

    from agent.service import daemon

    runs: list[int] = []

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError(f"failure {len(runs)}")

    async def scenario():
        old = daemon.SUPERVISE_FIRST
        daemon.SUPERVISE_FIRST = 0.01
        try:
            await asyncio.wait_for(daemon.supervised("test loop", flaky), 10)
        finally:
            daemon.SUPERVISE_FIRST = old

    asyncio.run(scenario())
    assert runs == [0, 1, 2]
    assert caplog.text.count("background task test loop failed; starting it again") == 2
    assert "RuntimeError: failure 1" in caplog.text


def test_sigterm_is_not_held_by_an_app_that_keeps_its_socket_open(tmp_path, simulators):
    """Shutdown waits for transactions, not connections: an idle app connection (and an idle
    module socket one) is closed at once, also where Server.wait_closed waits for every client."""
    from agent.service.daemon import DRAIN_TIMEOUT

    _, _, config = simulators
    agent = start(tmp_path, config)
    idle = []
    for name in ("agent.sock", "module.sock", "control.sock"):
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(tmp_path / name))
        idle.append(client)
    started = time.monotonic()
    try:
        assert agent.stop() == 0
        assert time.monotonic() - started < DRAIN_TIMEOUT / 2
        for client in idle:
            client.settimeout(5)
            assert client.recv(1) == b""  # closed by the agent
    finally:
        for client in idle:
            client.close()


def test_a_connection_flood_past_the_descriptor_limit_keeps_payments_and_control(
    tmp_path, simulators
):
    """1,100 connections against a service limited to 256 descriptors (the issue found 1,100
    idle ones exhausting 1,024): the reserve and the cap keep purchases and the control socket
    answering, and the log does not grow per connection."""
    import contextlib

    _, _, config = simulators
    log_path = tmp_path / "agent.log"
    flood: list[socket.socket] = []
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            ["prlimit", "--nofile=256", AGENT, "run", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_for(lambda: control_ready(tmp_path / "control.sock"), 15, "the control socket")
        wait_for(lambda: control(tmp_path / "control.sock", b'{"cmd": "status"}')["signed_in"],
                 10, "the sign-in at start")  # fmt: skip
        for _ in range(1100):
            client = socket.socket(socket.AF_UNIX)
            client.setblocking(False)
            with contextlib.suppress(OSError):  # a full backlog: the kernel refuses, rightly
                client.connect(str(tmp_path / "agent.sock"))
            flood.append(client)
        time.sleep(1.0)
        deadline = time.monotonic() + 30
        while True:  # the backlog drains as the agent admits and evicts
            try:
                answer = pay(tmp_path / "agent.sock")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert answer.text(39) == "00"
        assert control(tmp_path / "control.sock", b'{"cmd": "status"}')["ok"]
        assert process.poll() is None
        log = log_path.read_text()
        assert log.count("socket.accept() out of system resource") <= 1
        assert log.count("connection refused") <= 2
    finally:
        for client in flood:
            client.close()
        process.terminate()
        assert process.wait(timeout=40) == 0


def test_under_journald_every_line_carries_its_level(tmp_path, simulators):
    """systemd connects stderr to journald and names it in JOURNAL_STREAM (device:inode): the
    agent's lines then start with the syslog priority journald files them under."""
    _, _, config = simulators
    log = tmp_path / "agent.log"
    log.touch()
    stream = os.stat(log)
    agent = start(tmp_path, config, {"JOURNAL_STREAM": f"{stream.st_dev}:{stream.st_ino}"})
    try:
        config.write_text("[terminal\ntid=")
        os.kill(agent.process.pid, signal.SIGHUP)
        wait_for(lambda: "configuration not reloaded" in log.read_text(), 10, "the refusal")
    finally:
        assert agent.stop() == 0
    lines = log.read_text().splitlines()
    assert any(line.startswith("<6>INFO agent.service.daemon: ready") for line in lines)
    assert any(line.startswith("<3>ERROR") and "not reloaded" in line for line in lines)
    assert all(line[:1] == "<" and line[2:3] == ">" for line in lines), lines


def test_elsewhere_the_lines_are_plain(tmp_path, simulators):
    _, _, config = simulators
    agent = start(tmp_path, config, {"JOURNAL_STREAM": "1:2"})  # another stream's
    assert agent.stop() == 0
    assert (tmp_path / "agent.log").read_text().startswith("INFO ")


def test_the_service_loads_only_what_it_uses(tmp_path, simulators):
    """What ``benchmarks/footprint.py`` measured as avoidable stays out of the service, sales
    included: the technician's commands, hashlib (OpenSSL's digests), shutil (zlib, bz2, lzma)
    and unicodedata; and what only rarer paths use comes with its first use: tenacity (the
    retries of a recovery or a download), the self-check, telemetry's reporter and the download
    decoders. (The hook runner comes with the start's sign-in: its ``signed-in`` hooks are
    told.) Python itself lists the imports (``PYTHONPROFILEIMPORTTIME``)."""
    _, _, config = simulators
    agent = start(tmp_path, config, env={"PYTHONPROFILEIMPORTTIME": "1"})
    try:
        assert pay(tmp_path / "agent.sock").text(39) == "00"
    finally:
        assert agent.stop() == 0
    lines = (tmp_path / "agent.log").read_text().splitlines()
    imported = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
    assert {"agent.service.daemon", "iso8583"} <= imported  # the listing works
    # (importlib.import_module, which loads the command's own module, is not listed)
    commands = {name for name in imported if name.startswith("agent.cli.")}
    assert commands == {"agent.cli.common", "agent.cli.parser", "agent.cli.render"}
    assert not {"hashlib", "hmac", "secrets", "shutil", "unicodedata"} & imported
    deferred = {"tenacity", "agent.selfcheck", "agent.telemetry.reporter",
                "agent.session.emv", "agent.session.parameters",
                "agent.cli.help_zh"}  # fmt: skip
    assert not deferred & imported


def test_a_second_agent_on_the_same_state_changes_nothing(tmp_path, simulators):
    """DESIGN.md section 8: a second ``agent run`` on the same journal and sockets exits 1
    naming the lock and its holder; the first one's sale in flight is approved and stays live,
    and its sockets stay where they were. A provisioning file the second finds damaged (one
    the first would read at its next reload) stays where it is: setting it aside is the
    service's, under the lock."""
    host, _, config = simulators
    first = start(tmp_path, config)
    try:
        saved = tmp_path / "provisioning.json"
        saved.write_text('{"tid": "100')  # cut off
        host.post("/faults", {"kind": "late", "delay": 1.5})
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            sale = pool.submit(pay, tmp_path / "agent.sock", 2500)
            time.sleep(0.3)  # the sale is in flight at the host
            second = subprocess.run(
                [AGENT, "run", "--config", str(config)], capture_output=True, text=True, timeout=30
            )
            answer = sale.result(timeout=30)
        assert second.returncode == 1, second.stderr
        assert ".lock is locked by process " + str(first.process.pid) in second.stderr
        assert saved.exists() and not list(tmp_path.glob("provisioning.json.damaged-*"))
        assert answer.text(39) == "00"
        time.sleep(0.5)
        purchases = host.state()["purchases"].values()
        assert [p["reversed"] for p in purchases] == [False]
        assert host.state()["reversals"] == 0
        assert pay(tmp_path / "agent.sock").text(39) == "00"  # its socket is still its own
    finally:
        assert first.stop() == 0


def _damage(path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(os.urandom(8192))
    elif how == "truncated":  # a real journal cut off mid-page
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2 + 100])
    elif how == "emptied":  # truncated to nothing: SQLite would take it for a new database
        path.write_bytes(b"")
    elif how == "malformed":  # a page of the table b-tree overwritten
        data = bytearray(path.read_bytes())
        data[4096 + 8 : 4096 + 600] = os.urandom(592)
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["garbage", "truncated", "emptied", "malformed"])
def test_a_damaged_journal_is_moved_aside_and_the_agent_takes_payments(tmp_path, simulators, how):
    """DESIGN.md section 8: moved aside whole (never deleted), a fresh journal, payments go on,
    and the self-check says so until a technician moves the copy away."""
    _, _, config = simulators
    agent = start(tmp_path, config)
    for n in range(20):
        assert pay(tmp_path / "agent.sock", 1000 + n).text(39) == "00"
    assert agent.stop() == 0
    journal = tmp_path / "journal.sqlite3"
    for companion in ("journal.sqlite3-wal", "journal.sqlite3-shm"):
        (tmp_path / companion).unlink(missing_ok=True)
    _damage(journal, how)
    damaged_bytes = journal.read_bytes()
    agent = start(tmp_path, config)
    try:
        assert pay(tmp_path / "agent.sock", 2000).text(39) == "00"
        [aside] = tmp_path.glob("journal.sqlite3.damaged-*")
        assert aside.read_bytes() == damaged_bytes, "moved whole, not repaired"
        result = agent_cli("selftest", "--json", "--config", str(config))
        storage = next(c for c in json.loads(result.stdout)["checks"] if c["id"] == "storage")
        assert (storage["status"], storage["finding"]) == ("warn", "storage.journal-damaged")
        log = (tmp_path / "agent.log").read_text()
        assert "damaged" in log and "moved aside" in log
        # status says so too, until the copy is moved away
        status = json.loads(agent_cli("status", "--json", "--config", str(config)).stdout)
        assert status["journal_damaged"] == [str(aside)]
        text = agent_cli("status", "--lang", "en", "--config", str(config)).stdout
        assert f"damaged state set aside: {aside}" in text
        aside.rename(tmp_path.parent / aside.name)
        status = json.loads(agent_cli("status", "--json", "--config", str(config)).stdout)
        assert status["journal_damaged"] == []
    finally:
        assert agent.stop() == 0


def test_a_journal_that_cannot_be_opened_gets_answers_not_restarts(tmp_path, simulators):
    """A journal of a newer agent (an update rolled back): the service does not exit to be
    restarted every few seconds with nothing answering; it answers every request 96 with the
    reason (none may leave unrecorded), status says why, and once the journal can be opened
    (a technician moved it away) the agent starts as usual, without a restart."""
    import sqlite3

    _, _, config = simulators
    journal = tmp_path / "journal.sqlite3"
    agent = start(tmp_path, config)
    assert agent.stop() == 0
    db = sqlite3.connect(journal)
    db.execute("PRAGMA user_version = 999")
    db.commit()
    db.close()
    agent = AgentProcess(config, tmp_path / "agent.sock", tmp_path / "agent.log")
    try:
        agent.wait_ready()
        answer = pay(tmp_path / "agent.sock")
        assert answer.text(39) == "96"
        assert answer.text(63).startswith("AGENT storage.journal-unusable: not sent: journal ")
        assert "has schema 999" in answer.text(63)
        status = agent_cli("status", "--json", "--config", str(config))
        assert status.returncode == 1
        shown = json.loads(status.stdout)
        assert (shown["state"], shown["cause"]) == ("journal-unusable", "storage.journal-unusable")
        selftest = agent_cli("selftest", "--json", "--only", "storage", "--config", str(config))
        [storage] = json.loads(selftest.stdout)["checks"]
        assert (selftest.returncode, storage["status"]) == (1, "fail"), selftest.stdout
        journal.rename(tmp_path.parent / "journal-of-a-newer-agent.sqlite3")
        for companion in ("-wal", "-shm"):
            (tmp_path / f"journal.sqlite3{companion}").unlink(missing_ok=True)

        def signed_in() -> bool:
            try:
                return bool(control(tmp_path / "control.sock", b'{"cmd": "status"}')["signed_in"])
            except (OSError, KeyError):  # between the two: no socket, or the refusing one's
                return False

        wait_for(signed_in, 20, "the agent on a fresh journal")
        assert pay(tmp_path / "agent.sock").text(39) == "00"
    finally:
        assert agent.stop() == 0


def test_a_cut_off_provisioning_file_is_set_aside_not_a_reason_to_stop(tmp_path, simulators):
    """Set aside, the agent runs on, and `agent status` says so until a person moves it."""
    _, _, config = simulators
    saved = tmp_path / "provisioning.json"
    saved.write_text('{"tid": "10000001", "mid": "8981000123')  # cut off mid-write
    agent = start(tmp_path, config)
    try:
        assert pay(tmp_path / "agent.sock").text(39) == "00"
        [aside] = tmp_path.glob("provisioning.json.damaged-*")
        assert not saved.exists()
        status = agent_cli("status", "--config", str(config))
        assert status.returncode == 0, status.stderr
        assert f"damaged state set aside: {aside}" in status.stdout
        answer = json.loads(agent_cli("status", "--json", "--config", str(config)).stdout)
        assert answer["state_damaged"] == [str(aside)]
    finally:
        assert agent.stop() == 0


def _cpus_of_threads(pid: int) -> dict[str, str]:
    """Each thread of ``pid`` by name, with the CPUs it may run on (Cpus_allowed_list)."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines())
        threads[f"{status['Name']} {task.name}"] = status["Cpus_allowed_list"]
    return threads


def _cpu_list(cpus: set[int]) -> str:
    """``cpus`` as the kernel writes them in Cpus_allowed_list (ranges: 0-3)."""
    ordered, runs = sorted(cpus), []
    for cpu in ordered:
        if runs and runs[-1][1] == cpu - 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, lambda allowed: str(max(allowed))),  # the default: "last"
        ("any", _cpu_list),
        ("4095", _cpu_list),  # not a CPU of this machine: said so, and the kernel's choice
    ],
)
def test_the_agents_threads_run_on_the_cpu_gateway_cpu_names(
    tmp_path, simulators, setting, expected
) -> None:
    """The agent's threads hand every request to one another: they run together on one CPU
    unless told otherwise (gateway.cpu), the threads started for the sign-in and the purchase
    too; a CPU the kernel refuses leaves them where it puts them, with a warning."""
    _, _, config = simulators
    env = {"POS_AGENT_GATEWAY_CPU": setting} if setting is not None else None
    agent = start(tmp_path, config, env)
    try:
        assert pay(tmp_path / "agent.sock").text(39) == "00"
        threads = _cpus_of_threads(agent.process.pid)
        assert len(threads) >= 3  # the loop, a worker, the journal's...
        allowed = os.sched_getaffinity(0)
        assert set(threads.values()) == {expected(allowed)}, threads
    finally:
        agent.stop()
    log = (tmp_path / "agent.log").read_text()
    if setting == "4095":
        assert "gateway.cpu = '4095': the agent's threads cannot be put on CPU 4095" in log
