"""Hook runner: finding hooks, and Python entry point hooks (real distributions on sys.path).

Executable hooks as real processes are in tests/integration/test_hooks.py.
"""

import asyncio
import io
import json
import logging
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware_hooks import EVENTS, HookRunner, Outcome, declared
from firmware_hooks.runner import HookResult

EXAMPLES = Path(__file__).resolve().parents[2] / "firmware_hooks" / "examples"
PAYLOAD = {"tid": "10000001", "mid": "898100012340001", "response_code": "97", "stage": "retry"}

VENDOR_MODULE = """
import asyncio
import threading

from firmware_hooks import TryLater

release = threading.Event()
returned = threading.Event()
cancelled = threading.Event()


def echo(payload):
    return {"seen": payload, "thread": threading.current_thread().name}


async def echo_async(payload):
    await asyncio.sleep(0)
    return {"seen": payload}


def nothing(payload):
    return None


def later(payload):
    raise TryLater("modem not up yet")


def broken(payload):
    raise KeyError("module_serial")


def quits(payload):
    raise SystemExit(3)


def hangs(payload):
    release.wait(30)
    returned.set()


async def hangs_async(payload):
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        cancelled.set()
        raise


def returns_list(payload):
    return ["not", "an", "object"]


def returns_set(payload):
    return {"kcvs": {"1A2B3C4D"}}


def returns_coroutine(payload):
    return echo_async(payload)


def mutates(payload):
    payload["tid"] = "99999999"


class Screen:
    async def __call__(self, payload):
        return {"shown": payload["tid"]}


show = Screen()
"""


@pytest.fixture
def distribution(tmp_path, monkeypatch):
    """``install(name, entry_points)``: a real distribution with these entry points and the vendor
    module, where importlib.metadata finds it."""

    def install(name: str, entry_points: dict[str, str]) -> None:
        # A site directory of its own each time: importlib.metadata caches directory listings.
        site = tmp_path / f"site-{name}"
        info = site / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        lines = "".join(f"{event} = {value}\n" for event, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[pos_agent.hooks]\n{lines}")
        (site / "vendor_hooks.py").write_text(VENDOR_MODULE)
        monkeypatch.syspath_prepend(str(site))

    yield install
    sys.modules.pop("vendor_hooks", None)


def run(runner: HookRunner, event: str, payload: dict = PAYLOAD) -> list[HookResult]:
    return asyncio.run(runner.run(event, payload))


def run_one(distribution, value: str, timeout: float = 5.0) -> HookResult:
    distribution("vendor-hooks", {"on-97": value})
    [result] = run(HookRunner(None, timeout=timeout), "on-97")
    assert result.hook == f"entry point on-97 ({value})"
    return result


def hook(folder: Path, name: str, mode: int = 0o755, body: str = 'touch "$0.ran"') -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


# Finding executables


def test_executables_in_name_order_skipping_what_is_not_a_hook(tmp_path, caplog) -> None:
    folder = tmp_path / "on-97"
    for name in ("20-b", "10-a", "9-c", ".hidden", "30-old~", "40-x.disabled", "50-y.dpkg-old",
                 "60-z.dpkg-new"):  # fmt: skip
        hook(folder, name)
    hook(folder, "15-not-executable", mode=0o644)
    (folder / "17-a-directory").mkdir()
    (folder / "18-dangling").symlink_to(tmp_path / "nowhere")
    (folder / "19-link").symlink_to(hook(tmp_path / "elsewhere", "target"))
    caplog.set_level(logging.DEBUG, logger="firmware_hooks")
    hooks = HookRunner(tmp_path, entry_points=False).hooks_for("on-97")
    assert hooks == [str(folder / name) for name in ("10-a", "19-link", "20-b", "9-c")]
    assert "15-not-executable: not executable" in caplog.text
    assert "17-a-directory: not a regular file" in caplog.text
    assert "18-dangling" in caplog.text


def test_directory_is_made_absolute(tmp_path, monkeypatch) -> None:
    # Hooks are started in /, where a relative path would name nothing.
    hook(tmp_path / "hooks.d" / "provision", "50-p")
    monkeypatch.chdir(tmp_path)
    assert HookRunner(Path("hooks.d"), entry_points=False).hooks_for("provision") == [
        str(tmp_path / "hooks.d" / "provision" / "50-p")
    ]


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_group_or_world_writable_hook_is_refused_not_run(tmp_path, caplog, mode) -> None:
    path = hook(tmp_path / "signed-in", "50-writable", mode=mode)
    runner = HookRunner(tmp_path, entry_points=False)
    assert runner.hooks_for("signed-in") == [str(path)]  # listed: run reports it
    [result] = run(runner, "signed-in")
    assert result.outcome is Outcome.FAILED and result.output is None
    assert result.detail == f"refused: the hook is group- or world-writable (mode {mode:04o})"
    assert f"refusing hook {path}" in caplog.text
    assert not path.with_name("50-writable.ran").exists()


def test_missing_directory_means_no_hooks(tmp_path) -> None:
    assert HookRunner(tmp_path / "absent", entry_points=False).hooks_for("provision") == []
    assert run(HookRunner(tmp_path / "absent", entry_points=False), "provision") == []
    (tmp_path / "file").write_text("")  # hooks.d is a file, not a directory
    assert HookRunner(tmp_path / "file", entry_points=False).hooks_for("provision") == []
    assert HookRunner(None, entry_points=False).hooks_for("provision") == []


def test_unknown_event_is_a_value_error(tmp_path) -> None:
    runner = HookRunner(tmp_path)
    with pytest.raises(ValueError, match="unknown hook event 'on-98'"):
        runner.hooks_for("on-98")
    with pytest.raises(ValueError, match="unknown hook event 'on-98'"):
        run(runner, "on-98")


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        HookRunner(None, timeout=0)


# Python entry points


def test_sync_hook_gets_the_payload_in_a_thread_and_answers(distribution) -> None:
    result = run_one(distribution, "vendor_hooks:echo")
    assert result.outcome is Outcome.DONE and result.detail == ""
    assert result.output == {"seen": {**PAYLOAD, "event": "on-97"}, "thread": "pos-agent hook"}
    assert result.duration_ms >= 0


def test_async_hook_runs_on_the_loop(distribution) -> None:
    result = run_one(distribution, "vendor_hooks:echo_async")
    assert result.outcome is Outcome.DONE
    assert result.output == {"seen": {**PAYLOAD, "event": "on-97"}}


def test_callable_object_with_async_call(distribution) -> None:
    result = run_one(distribution, "vendor_hooks:show")
    assert (result.outcome, result.output) == (Outcome.DONE, {"shown": "10000001"})


def test_none_is_done_without_output(distribution) -> None:
    result = run_one(distribution, "vendor_hooks:nothing")
    assert (result.outcome, result.output, result.detail) == (Outcome.DONE, None, "")


def test_try_later(distribution) -> None:
    result = run_one(distribution, "vendor_hooks:later")
    assert result.outcome is Outcome.TRY_LATER
    assert result.detail == "TryLater: modem not up yet"


def test_exception_fails_with_its_type_and_message(distribution, caplog) -> None:
    result = run_one(distribution, "vendor_hooks:broken")
    assert result.outcome is Outcome.FAILED and result.output is None
    assert result.detail == "KeyError: 'module_serial'"
    assert "Traceback" in caplog.text and 'raise KeyError("module_serial")' in caplog.text


def test_sys_exit_in_a_hook_does_not_stop_the_agent(distribution) -> None:
    result = run_one(distribution, "vendor_hooks:quits")
    assert (result.outcome, result.detail) == (Outcome.FAILED, "SystemExit: 3")


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("vendor_hooks:absent", "AttributeError: module 'vendor_hooks' has no attribute 'absent'"),
        ("no_such_vendor_module:hook",
         "ModuleNotFoundError: No module named 'no_such_vendor_module'"),
    ],
)  # fmt: skip
def test_missing_function_or_module_fails(distribution, value: str, detail: str) -> None:
    result = run_one(distribution, value)
    assert (result.outcome, result.output, result.detail) == (Outcome.FAILED, None, detail)


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("vendor_hooks:returns_list", "returned list, not a dict or None"),
        ("vendor_hooks:returns_coroutine", "returned coroutine, not a dict or None"),
        ("vendor_hooks:returns_set",
         "returned a dict that is not JSON: Object of type set is not JSON serializable"),
    ],
)  # fmt: skip
def test_bad_return_fails(distribution, value: str, detail: str) -> None:
    result = run_one(distribution, value)
    assert (result.outcome, result.output, result.detail) == (Outcome.FAILED, None, detail)


def test_hung_sync_hook_is_abandoned_at_the_timeout(distribution) -> None:
    distribution("vendor-hooks", {"on-97": "vendor_hooks:hangs"})
    runner = HookRunner(None, timeout=0.3)

    async def scenario() -> tuple[list[HookResult], bool]:
        results = await runner.run("on-97", PAYLOAD)
        module = sys.modules["vendor_hooks"]
        still_running = not module.returned.is_set()
        module.release.set()
        return results, still_running

    [result], still_running = asyncio.run(scenario())
    assert still_running
    assert (result.outcome, result.detail) == (Outcome.FAILED, "did not return within 0.3 s")
    assert 300 <= result.duration_ms < 2000


def test_hung_async_hook_is_cancelled_at_the_timeout(distribution) -> None:
    result = run_one(distribution, "vendor_hooks:hangs_async", timeout=0.3)
    assert (result.outcome, result.detail) == (Outcome.FAILED, "did not return within 0.3 s")
    assert sys.modules["vendor_hooks"].cancelled.is_set()


def test_each_hook_gets_its_own_copy_of_the_payload(distribution) -> None:
    distribution("a-hooks", {"on-97": "vendor_hooks:mutates"})
    distribution("b-hooks", {"on-97": "vendor_hooks:echo"})
    payload = dict(PAYLOAD)
    first, second = run(HookRunner(None), "on-97", payload)
    assert first.hook == "entry point on-97 (vendor_hooks:echo)"  # ordered by value
    assert first.output["seen"]["tid"] == "10000001"
    assert second.hook == "entry point on-97 (vendor_hooks:mutates)"
    assert payload == PAYLOAD


def test_event_in_the_payload_is_the_event_run(distribution) -> None:
    distribution("vendor-hooks", {"on-97": "vendor_hooks:echo"})
    [result] = run(HookRunner(None), "on-97", {**PAYLOAD, "event": "provision"})
    assert result.output["seen"]["event"] == "on-97"


def test_executables_run_before_entry_points(distribution, tmp_path) -> None:
    distribution("vendor-hooks", {"signed-in": "vendor_hooks:nothing"})
    executable = hook(tmp_path / "signed-in", "90-last-by-name", mode=0o777)  # refused: no process
    runner = HookRunner(tmp_path)
    names = [str(executable), "entry point signed-in (vendor_hooks:nothing)"]
    assert runner.hooks_for("signed-in") == names
    assert [(r.hook, r.outcome) for r in run(runner, "signed-in")] == [
        (names[0], Outcome.FAILED), (names[1], Outcome.DONE),
    ]  # fmt: skip


def test_entry_points_are_read_once_when_first_wanted(distribution) -> None:
    runner = HookRunner(None)
    distribution("a-hooks", {"on-97": "vendor_hooks:nothing"})  # after the runner was made
    assert runner.hooks_for("on-97") == ["entry point on-97 (vendor_hooks:nothing)"]
    distribution("b-hooks", {"provision": "vendor_hooks:nothing"})
    assert runner.hooks_for("provision") == []  # cached: a new package needs a restart
    assert HookRunner(None).hooks_for("provision") == [
        "entry point provision (vendor_hooks:nothing)"
    ]
    assert HookRunner(None, entry_points=False).hooks_for("on-97") == []


def test_entry_point_named_after_no_event_is_ignored(distribution, caplog) -> None:
    distribution("vendor-hooks", {"on-98": "vendor_hooks:nothing"})
    runner = HookRunner(None)
    assert all(runner.hooks_for(event) == [] for event in EVENTS)
    assert "entry point on-98 = vendor_hooks:nothing in group pos_agent.hooks" in caplog.text


def test_runs_are_logged_without_the_payload(distribution, caplog) -> None:
    distribution("a-hooks", {"on-97": "vendor_hooks:broken"})
    distribution("b-hooks", {"on-97": "vendor_hooks:echo"})
    caplog.set_level(logging.DEBUG)
    run(HookRunner(None), "on-97", {**PAYLOAD, "mid": "MARKER-MID-4711"})
    runs = [r for r in caplog.records if r.name == "firmware_hooks.runner" and r.levelno == 20]
    assert [r.getMessage().rsplit(" in ", 1)[0] for r in runs] == [
        "hook entry point on-97 (vendor_hooks:broken) for on-97: failed",
        "hook entry point on-97 (vendor_hooks:echo) for on-97: done",
    ]
    assert "MARKER-MID-4711" not in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="files of another owner need root to make")
@pytest.mark.parametrize(
    ("arrange", "reason"),
    [
        ("event-dir-world-writable", "directory {event} is group- or world-writable (mode 0777)"),
        ("hooks-d-world-writable", "directory {root} is group- or world-writable (mode 0777)"),
        ("owned-by-nobody", "the hook is owned by uid 65534, not root or the agent's user"),
        ("link-into-world-writable", "directory {outside} is group- or world-writable"),
    ],
)
def test_hooks_anyone_else_could_change_are_refused(tmp_path, arrange: str, reason: str) -> None:
    """DESIGN.md section 9: the file (after links) and every directory up to hooks.d owned by
    root or the agent's user and writable by no one else."""
    root = tmp_path / "hooks.d"
    event = root / "on-97"
    path = hook(event, "50-hook")
    outside = tmp_path / "drop"
    if arrange == "event-dir-world-writable":
        event.chmod(0o777)
    elif arrange == "hooks-d-world-writable":
        root.chmod(0o777)
    elif arrange == "owned-by-nobody":
        os.chown(path, 65534, 65534)
    else:  # a symlink to a file in a world-writable directory
        outside.mkdir(mode=0o755)
        outside.chmod(0o777)
        target = hook(outside, "payload")
        path.unlink()
        path.symlink_to(target)
    [result] = run(HookRunner(root, entry_points=False), "on-97")
    assert result.outcome is Outcome.FAILED
    expected = reason.format(event=event, root=root, outside=outside)
    assert result.detail.startswith(f"refused: {expected}"), result.detail
    assert not path.with_name("50-hook.ran").exists()


def test_a_link_swapped_between_the_check_and_the_exec_runs_nothing_else(
    tmp_path, monkeypatch
) -> None:
    """DESIGN.md section 9: what executes is the very file that was checked. The link is
    swapped (to another user's script) at the last moment before the process starts."""
    from firmware_hooks import process

    root = tmp_path / "hooks.d"
    trusted = hook(root / "lib", "checked", body=f"touch {tmp_path}/trusted.ran")
    planted = hook(root / "lib", "planted", body=f"touch {tmp_path}/planted.ran")
    os.chown(planted, 65534, 65534)  # another user's code
    link = root / "on-97" / "50-link"
    link.parent.mkdir(parents=True)
    link.symlink_to(trusted)
    start = process.run_process

    async def swap_then_start(*args, **kwargs):
        link.unlink()
        link.symlink_to(planted)
        return await start(*args, **kwargs)

    monkeypatch.setattr(process, "run_process", swap_then_start)
    [result] = run(HookRunner(root, entry_points=False), "on-97")
    assert not (tmp_path / "planted.ran").exists(), "another user's code ran as the service"
    assert result.outcome is Outcome.DONE and (tmp_path / "trusted.ran").exists()


def test_empty_hooks_directory_means_no_hooks(tmp_path, monkeypatch) -> None:
    """hooks.directory = "" must not run executables from the working directory."""
    hook(tmp_path / "on-97", "50-here")
    monkeypatch.chdir(tmp_path)
    assert HookRunner("", entry_points=False).hooks_for("on-97") == []
    assert HookRunner(None, entry_points=False).hooks_for("on-97") == []


def test_hooks_of_one_event_share_a_budget(tmp_path) -> None:
    """Three hanging hooks cost a remedy its budget, not three timeouts."""
    for name in ("10-a", "20-b", "30-c"):
        hook(tmp_path / "sync-clock", name, body="sleep 30")
    runner = HookRunner(tmp_path, timeout=0.4, entry_points=False)
    started = time.monotonic()
    results = asyncio.run(runner.run("sync-clock", {}, budget=0.6))
    assert [r.outcome for r in results] == [Outcome.FAILED] * 3
    assert results[2].detail == "not run: the 0.6 s for sync-clock hooks were used up"
    assert time.monotonic() - started < 5  # the budget, not 3 x 30 s


# The examples (run as processes in tests/integration/test_hooks.py)


def test_one_documented_executable_example_per_event() -> None:
    assert sorted(path.name for path in EXAMPLES.iterdir()) == sorted(EVENTS)
    for event in EVENTS:
        [example] = (EXAMPLES / event).iterdir()
        assert example.name[:3].rstrip("-").isdigit(), example
        assert example.stat().st_mode & 0o111 == 0o111, f"{example} is not executable"
        text = example.read_text(encoding="utf-8")
        assert text.startswith('#!/usr/bin/env python3\n"""'), example
        assert f'{{"event": "{event}"' in text, f"{example} documents no payload"


def test_examples_are_ruff_clean() -> None:
    # The repository-wide check does not see them: they have no .py suffix.
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *map(str, EXAMPLES.glob("*/*"))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_provision_example_prints_the_provisioning_file(tmp_path, monkeypatch, capsys) -> None:
    # Through the runner the example only looks at /etc/pos-agent; here it is given another file.
    [example] = (EXAMPLES / "provision").iterdir()
    main = runpy.run_path(str(example), run_name="example")["main"]
    payload = {"event": "provision", "reason": "test", "tid": None, "mid": None,
               "module_serial": "SIM0000000000001"}  # fmt: skip
    record = {"tid": "10000002", "mid": "898100012340002", "primary": "10.0.0.5:5000",
              "key_slot": 1}  # fmt: skip
    path = tmp_path / "provisioning.json"
    path.write_text(json.dumps({**record, "notes": "for people, not for the agent"}))
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(payload)))
    assert main(path) == 0
    assert json.loads(capsys.readouterr().out) == record
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(payload)))
    assert main(tmp_path / "absent.json") == 75
    assert "absent.json does not exist yet (test)" in capsys.readouterr().err


def test_finding_entry_points_leaves_importlib_metadata_out_of_the_service() -> None:
    """importlib.metadata (with email, zipfile, csv: 2 MB) runs in a child process."""
    script = (
        "import asyncio, sys\n"
        "from firmware_hooks.runner import HookRunner\n"
        "asyncio.run(HookRunner(None).run('on-97', {}))\n"
        "print(sorted(m for m in ('email', 'importlib.metadata', 'zipfile') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_entry_points_that_cannot_be_listed_are_a_warning(distribution, monkeypatch, caplog):
    distribution("vendor-hooks", {"on-97": "vendor_hooks:nothing"})
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    with caplog.at_level(logging.WARNING):
        assert run(HookRunner(None), "on-97") == []
    assert "cannot list the entry points of group pos_agent.hooks" in caplog.text


def test_no_child_lists_entry_points_when_no_distribution_declares_the_group(
    tmp_path, monkeypatch, caplog
) -> None:
    """Most terminals have no entry-point hooks: no second interpreter is started to find none
    (the child would fail here, and say so)."""
    site = tmp_path / "site"
    other = site / "other-1.0.dist-info"
    other.mkdir(parents=True)
    (other / "entry_points.txt").write_text("[pos_agent.modules]\nserial = x:y\n")
    (site / "legacy.egg-info").write_text("Name: legacy\n")  # distutils' one-file form
    monkeypatch.setattr(sys, "path", [str(site), str(tmp_path / "absent")])
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    with caplog.at_level(logging.WARNING):
        assert run(HookRunner(None), "on-97") == []
    assert caplog.text == ""


@pytest.mark.parametrize("header", ["[pos_agent.hooks]", " [ pos_agent.hooks ] "])
def test_a_declaring_distribution_or_an_archive_on_the_path_is_listed_by_the_child(
    tmp_path, header
) -> None:
    site = tmp_path / "site"
    info = site / "vendor-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "entry_points.txt").write_text(f"[console_scripts]\nx = y:z\n{header}\n")
    assert declared.may_declare([str(site)])
    archive = tmp_path / "hooks.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: not looked into here
    assert declared.may_declare([str(tmp_path / "absent"), str(archive)])
    assert not declared.may_declare([str(tmp_path / "absent")])
    egg = tmp_path / "vendor-1.0-py3.egg"  # an unzipped egg on the path, as easy-install left it
    (egg / "EGG-INFO").mkdir(parents=True)
    (egg / "EGG-INFO" / "entry_points.txt").write_text(f"{header}\non-97 = x:y\n")
    assert declared.may_declare([str(egg)])


def test_an_empty_hooks_directory_means_no_hooks_at_all(distribution, tmp_path) -> None:
    """DESIGN.md section 9: ``hooks.directory = ""`` turns the hooks off, entry points too; a
    directory configured runs both."""
    from agent.config import HooksConfig
    from agent.hook_dispatch import hook_runner

    distribution("vendor-hooks", {"provision": "vendor_hooks:nothing"})
    assert hook_runner(HooksConfig(directory="")).hooks_for("provision") == []
    assert hook_runner(HooksConfig(directory=str(tmp_path))).hooks_for("provision") == [
        "entry point provision (vendor_hooks:nothing)"
    ]


def test_a_terminal_without_hooks_never_loads_the_runner(tmp_path) -> None:
    """Every sign-in tells the signed-in hooks, the start's too: where no hook exists (no
    executable in the event's folder, no distribution declaring the group), the runner is not
    loaded for nothing (0.2 MB kept for good) and nothing is run."""
    script = (
        "import asyncio, sys\n"
        "from types import SimpleNamespace as N\n"
        "from agent.hook_dispatch import HookDispatch\n"
        f"hooks = N(directory={str(tmp_path)!r}, timeout=5.0)\n"
        "dispatch = HookDispatch(lambda: N(hooks=hooks), None)\n"
        "async def main():\n"
        "    dispatch.tell('signed-in', {})\n"
        "    await dispatch.told()\n"
        "    print(await dispatch.ask('provision', {}, budget=1.0))\n"
        "asyncio.run(main())\n"
        "print('firmware_hooks.runner' in sys.modules)\n"
    )
    (tmp_path / "signed-in").mkdir()  # a folder without a hook in it
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["[]", "False"], result.stdout + result.stderr


def test_a_hook_finishing_as_its_caller_is_cancelled_keeps_the_cancellation() -> None:
    """The hook's process ends in the same loop iteration as the service stops (cancels its
    caller): the cancellation goes on (on Python 3.11 asyncio.wait_for lost it, and the stop
    waited for ever for a task back at its queue)."""
    from firmware_hooks import process

    async def scenario() -> None:
        finished = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(process._wait(finished, 10))
        await asyncio.sleep(0)  # waiting on the hook now
        finished.set_result(None)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())
