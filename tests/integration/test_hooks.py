"""Executable hooks as real processes: exit codes, output, environment, timeouts, the examples."""

import asyncio
import json
import logging
import os
import re
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firmware_hooks import EVENTS, HookRunner, Outcome
from firmware_hooks.process import SEARCH_PATH
from firmware_hooks.runner import HookResult
from tests.processes import wait_for

HOOKS = Path(__file__).resolve().parents[2] / "firmware_hooks"
PAYLOAD = {"tid": "10000001", "mid": "898100012340001", "response_code": "97", "stage": "retry"}
PYTHON = f"#!{sys.executable}\n"  # the minimal PATH may hold no python3 on a development machine


def hook(tmp_path: Path, name: str, text: str, event: str = "on-97") -> Path:
    folder = tmp_path / "hooks.d" / event
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def run(tmp_path: Path, event: str = "on-97", payload: dict = PAYLOAD, timeout: float = 5.0):
    runner = HookRunner(tmp_path / "hooks.d", timeout=timeout, entry_points=False)
    return asyncio.run(runner.run(event, payload))


def run_one(tmp_path: Path, text: str, **options) -> HookResult:
    path = hook(tmp_path, "50-hook", text)
    [result] = run(tmp_path, **options)
    assert result.hook == str(path)
    return result


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    # Dead but not yet reaped: in a container nobody may ever reap it.
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_hooks_run_in_name_order_each_with_the_payload(tmp_path) -> None:
    for name in ("20-second", "10-first", "30-third"):
        hook(tmp_path, name, PYTHON + f"""
import json, sys
payload = json.load(sys.stdin)
with open({str(tmp_path / "order")!r}, "a") as order:
    order.write({name!r} + "\\n")
json.dump({{"name": {name!r}, "payload": payload}}, sys.stdout)
""")  # fmt: skip
    results = run(tmp_path)
    names = ["10-first", "20-second", "30-third"]
    assert (tmp_path / "order").read_text().split() == names
    assert [Path(r.hook).name for r in results] == names
    assert [r.outcome for r in results] == [Outcome.DONE] * 3
    assert [r.output for r in results] == [
        {"name": name, "payload": {**PAYLOAD, "event": "on-97"}} for name in names
    ]


def test_payload_is_one_utf8_json_line(tmp_path) -> None:
    message = {"zh": "终端未登记，请联系客服", "en": "Terminal not registered"}
    result = run_one(tmp_path, PYTHON + """
import json, sys
data = sys.stdin.buffer.read()
json.dump({"lines": data.decode("utf-8").splitlines(), "ends_in_newline": data.endswith(b"\\n")},
          sys.stdout)
""", event="on-97", payload={"tid": "10000001", "message": message})  # fmt: skip
    assert result.output["ends_in_newline"] is True
    [line] = result.output["lines"]
    assert json.loads(line) == {"tid": "10000001", "message": message, "event": "on-97"}


@pytest.mark.parametrize(
    ("script", "outcome", "output", "detail"),
    [
        ("exit 0", Outcome.DONE, None, ""),
        ("echo '{\"tid\": \"10000002\"}'", Outcome.DONE, {"tid": "10000002"}, ""),
        ("echo '  {\"a\": 1}  '; echo", Outcome.DONE, {"a": 1}, ""),
        ("exit 75", Outcome.TRY_LATER, None, "exit 75"),
        ("echo '{\"retry_in\": 30}'; exit 75", Outcome.TRY_LATER, {"retry_in": 30}, "exit 75"),
        ("exit 3", Outcome.FAILED, None, "exit 3"),
        ("echo '{\"why\": \"no modem\"}'; exit 1", Outcome.FAILED, {"why": "no modem"}, "exit 1"),
        ("kill -TERM $$", Outcome.FAILED, None, "killed by signal SIGTERM"),
        ("echo 'not json'", Outcome.FAILED, None,
         "printed invalid JSON: Expecting value: line 1 column 1 (char 0)"),
        ("echo '{\"a\": 1}{\"b\": 2}'", Outcome.FAILED, None,
         "printed invalid JSON: Extra data: line 1 column 9 (char 8)"),
        ("printf '\\377'", Outcome.FAILED, None, "printed invalid JSON: not UTF-8"),
        ("echo '[1, 2]'", Outcome.FAILED, None, "printed JSON that is not an object: an array"),
        ("echo '\"done\"'", Outcome.FAILED, None, "printed JSON that is not an object: a string"),
        ("echo null", Outcome.FAILED, None, "printed JSON that is not an object: null"),
        ("echo 'not json'; exit 75", Outcome.FAILED, None,
         "printed invalid JSON: Expecting value: line 1 column 1 (char 0)"),
    ],
)  # fmt: skip
def test_exit_status_and_output(tmp_path, script, outcome, output, detail) -> None:
    result = run_one(tmp_path, f"#!/bin/sh\n{script}\n")
    assert (result.outcome, result.output, result.detail) == (outcome, output, detail)


def test_output_over_64_kib_fails_and_is_not_kept(tmp_path) -> None:
    exactly = run_one(tmp_path, PYTHON + 'print("{\\"a\\": \\"" + "x" * (65536 - 11) + "\\"}")')
    assert exactly.outcome is Outcome.DONE and len(exactly.output["a"]) == 65536 - 11
    result = run_one(tmp_path, PYTHON + 'import sys; sys.stdout.write("{" + " " * 1_000_000)')
    assert (result.outcome, result.output, result.detail) == (
        Outcome.FAILED, None, "output over 64 KiB",
    )  # fmt: skip


@pytest.mark.parametrize("size", [10, 1_000_000])
def test_hook_that_ignores_stdin(tmp_path, size: int) -> None:
    # A payload larger than the pipe buffer makes the write fail once the hook has gone.
    result = run_one(tmp_path, "#!/bin/sh\necho '{}'\n", payload={"blob": "x" * size})
    assert (result.outcome, result.output) == (Outcome.DONE, {})


def test_environment_is_minimal(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("POS_AGENT_HOST_PRIMARY", "10.9.9.9:5000")  # the agent's, not the hook's
    result = run_one(tmp_path, PYTHON + """
import json, os, sys
# As the hook was started, before Python changed anything.
with open("/proc/self/environ", "rb") as environ:
    variables = dict(item.split(b"=", 1) for item in environ.read().split(b"\\0") if item)
pid = os.getpid()
json.dump({"env": {k.decode(): v.decode() for k, v in variables.items()}, "cwd": os.getcwd(),
           "leads_group": os.getpgid(0) == pid, "leads_session": os.getsid(0) == pid}, sys.stdout)
""")  # fmt: skip
    assert result.output == {
        "env": {"PATH": SEARCH_PATH, "LANG": "C.UTF-8", "POS_AGENT_EVENT": "on-97"},
        "cwd": "/",
        "leads_group": True,
        "leads_session": True,
    }


def test_timeout_kills_the_whole_process_group(tmp_path) -> None:
    result = run_one(tmp_path, f"""#!/bin/sh
sleep 60 &
echo $! > {tmp_path}/grandchild.pid
echo $$ > {tmp_path}/hook.pid
echo started >&2
sleep 60
""", timeout=0.5)  # fmt: skip
    assert (result.outcome, result.output) == (Outcome.FAILED, None)
    assert result.detail == "killed after 0.5 s timeout"
    assert 500 <= result.duration_ms < 3000
    for name in ("hook.pid", "grandchild.pid"):
        pid = int((tmp_path / name).read_text())
        wait_for(lambda pid=pid: gone(pid), 5, f"{name} {pid} to be killed")


def test_a_child_holding_stdout_keeps_the_hook_running(tmp_path) -> None:
    result = run_one(tmp_path, f"#!/bin/sh\nsleep 60 &\necho $! > {tmp_path}/child.pid\nexit 0\n",
                     timeout=0.5)  # fmt: skip
    assert result.outcome is Outcome.FAILED
    assert result.detail == (
        "killed after 0.5 s timeout (it had ended with exit 0, but a process it started still"
        " held its stdout or stderr)"
    )
    pid = int((tmp_path / "child.pid").read_text())
    wait_for(lambda: gone(pid), 5, f"child {pid} to be killed")


@pytest.mark.parametrize("when", ["starting", "running"])
def test_cancelled_run_leaves_no_hook_running(tmp_path, when: str) -> None:
    pids = tmp_path / "pids"
    hook(tmp_path, "50-slow", f"#!/bin/sh\nsleep 60 &\necho $! $$ > {pids}\nwait\n")
    runner = HookRunner(tmp_path / "hooks.d", timeout=30, entry_points=False)

    async def scenario() -> None:
        task = asyncio.create_task(runner.run("on-97", PAYLOAD))
        if when == "starting":
            await asyncio.sleep(0)  # asyncio is still connecting the pipes
        else:
            await asyncio.to_thread(wait_for, lambda: pids.exists() and pids.read_text(), 5, "pids")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    time.sleep(0.2)  # a hook that survived would write its pids now
    for pid in map(int, pids.read_text().split() if pids.exists() else []):
        wait_for(lambda pid=pid: gone(pid), 5, f"{pid} to be killed")


def test_script_without_interpreter_line_cannot_start(tmp_path) -> None:
    result = run_one(tmp_path, "echo '{}'\n")
    assert (result.outcome, result.detail) == (
        Outcome.FAILED, "could not start: Exec format error (a script needs a #! line)",
    )  # fmt: skip
    result = run_one(tmp_path, "#!/no/such/interpreter\n")
    assert result.detail == (
        "could not start: No such file or directory (the hook, or the interpreter on its #! line,"
        " is missing)"
    )


def test_stderr_is_logged_when_the_hook_did_not_succeed(tmp_path, caplog) -> None:
    hook(tmp_path, "10-ok", "#!/bin/sh\necho 'all fine' >&2\n")
    hook(tmp_path, "20-later", "#!/bin/sh\necho 'modem not up' >&2\nexit 75\n")
    hook(tmp_path, "30-chatty", PYTHON + 'import sys; sys.stderr.write("e" * 5000); sys.exit(2)')
    caplog.set_level(logging.DEBUG, logger="firmware_hooks")
    run(tmp_path, payload={**PAYLOAD, "mid": "MARKER-MID-4711"})
    logged = {(r.levelname, r.getMessage()) for r in caplog.records}
    folder = tmp_path / "hooks.d" / "on-97"
    assert ("DEBUG", f"hook {folder}/10-ok for on-97 wrote on stderr: all fine") in logged
    assert ("WARNING", f"hook {folder}/20-later for on-97 wrote on stderr: modem not up") in logged
    assert ("WARNING", f"hook {folder}/30-chatty for on-97 wrote on stderr: {'e' * 1000}...") in (
        logged
    )
    runs = [re.sub(r" in \d+ ms", "", m) for level, m in logged if level == "INFO"]
    assert sorted(runs) == [
        f"hook {folder}/10-ok for on-97: done",
        f"hook {folder}/20-later for on-97: try-later (exit 75)",
        f"hook {folder}/30-chatty for on-97: failed (exit 2)",
    ]
    assert "MARKER-MID-4711" not in caplog.text


# The examples, as the agent runs them, with the payloads firmware_hooks/README.md documents


def documented_payloads() -> dict[str, dict]:
    readme = (HOOKS / "README.md").read_text(encoding="utf-8")
    payloads = {}
    for section in readme.split("\n### ")[1:]:
        title, _, body = section.partition("\n")
        if title in EVENTS:
            payloads[title] = json.loads(body.split("```json\n", 1)[1].split("```", 1)[0])
    return payloads


def test_readme_documents_a_payload_per_event() -> None:
    payloads = documented_payloads()
    assert sorted(payloads) == sorted(EVENTS)
    assert all(payload["event"] == event for event, payload in payloads.items())


@pytest.mark.skipif(
    shutil.which("python3", path=SEARCH_PATH) is None,
    reason=f"the examples start with #!/usr/bin/env python3; no python3 in {SEARCH_PATH}",
)
@pytest.mark.parametrize("event", EVENTS)
def test_example_runs_with_its_documented_payload(tmp_path, event: str) -> None:
    # Installed as the README says: a checkout under umask 002 leaves them group-writable.
    installed = shutil.copytree(HOOKS / "examples" / event, tmp_path / event)
    for path in installed.iterdir():
        path.chmod(0o755)
    runner = HookRunner(tmp_path, timeout=5, entry_points=False)
    [result] = asyncio.run(runner.run(event, documented_payloads()[event]))
    assert result.outcome in (Outcome.DONE, Outcome.TRY_LATER), result
    if event == "provision" and not os.path.exists("/etc/pos-agent/provisioning.json"):
        assert (result.outcome, result.output) == (Outcome.TRY_LATER, None)
    if event == "sync-clock":  # a clock 312.5 s ahead is set back
        [date, hwclock] = result.output["would_run"]
        assert date[:3] == ["date", "-u", "-s"] and hwclock[0] == "hwclock"
        target = datetime.strptime(date[3], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        assert abs(target - (datetime.now(UTC) - timedelta(seconds=312.5))) < timedelta(seconds=5)


def test_an_informed_hook_that_says_try_later_is_told_again(tmp_path, monkeypatch) -> None:
    """DESIGN.md section 9: exit 75 is try later. A hook told of an event in the background
    that says so is told again (with back-off), and only it: the others of the event did their
    part. An older display-message is not told again once a newer one replaced it."""
    from agent import hook_dispatch
    from agent.config import Config, HooksConfig
    from agent.journal import Journal

    monkeypatch.setattr(hook_dispatch, "AGAIN_FIRST", 0.05)
    monkeypatch.setattr(hook_dispatch, "AGAIN_LONGEST", 0.1)
    calls = tmp_path / "calls"

    def counting(name: str) -> str:
        return PYTHON + f"""
import json, sys
told = json.load(sys.stdin)
with open({str(calls)!r}, "a") as out:
    out.write({name!r} + " " + told.get("text", "") + "\\n")
"""  # fmt: skip

    hook(tmp_path, "10-fine", counting("10-fine"))
    hook(tmp_path, "20-modem", counting("20-modem") + f"""
import os
first = {str(tmp_path / "modem-up")!r}
if not os.path.exists(first):
    open(first, "w").close()
    sys.exit(75)
""")  # fmt: skip
    hook(tmp_path, "50-screen", counting("50-screen") + "sys.exit(75)\n", event="display-message")
    config = Config(hooks=HooksConfig(directory=str(tmp_path / "hooks.d"), timeout=5.0))
    journal = Journal(tmp_path / "journal.sqlite3")

    async def scenario() -> None:
        hooks = hook_dispatch.HookDispatch(lambda: config, journal)
        hooks.tell("on-97", PAYLOAD)
        hooks.tell("display-message", {"text": "old"})
        await asyncio.sleep(0.02)
        hooks.tell("display-message", {"text": "new"})
        await asyncio.wait_for(hooks.told(), 30)

    asyncio.run(scenario())
    journal.close()
    lines = calls.read_text().split("\n")
    assert lines.count("10-fine ") == 1 and lines.count("20-modem ") == 2
    assert lines.count("50-screen old") == 1  # replaced by the newer one: not told again
    assert lines.count("50-screen new") == 1 + hook_dispatch.AGAIN_TIMES


def test_a_fifo_swapped_in_for_a_hook_is_refused_at_once(tmp_path) -> None:
    """Listed as a file, then swapped for a FIFO before it runs: opening it must not wait for
    a writer (the agent's event loop would stand still); it is refused as no regular file."""
    from firmware_hooks.runner import _Executable

    path = hook(tmp_path, "50-swapped", "#!/bin/sh\nexit 0\n")
    listed = _Executable(path, tmp_path / "hooks.d")
    path.unlink()
    os.mkfifo(path, 0o755)
    outcome, _, detail = asyncio.run(asyncio.wait_for(listed.run("on-97", "{}", 5.0), 5))
    assert (outcome, detail) == (Outcome.FAILED, "refused: the hook is no longer a regular file")
