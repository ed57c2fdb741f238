"""``agent selftest`` as a technician runs it: a real process, the simulators as processes."""

import json
import os
import subprocess
import time

from tests.processes import AGENT, downloaded


def agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENT, *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_healthy_terminal_all_ok_exit_0(simulators) -> None:
    _, _, config = simulators
    downloaded(config.parent)
    assert agent("signin", "--config", str(config)).returncode == 0
    result = agent("selftest", "--json", "--config", str(config))
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert set(report) == {"ok", "duration_ms", "tid", "version", "at", "checks"}
    assert report["ok"] is True
    assert [(c["id"], c["status"]) for c in report["checks"]] == [
        (name, "ok")
        for name in (
            "provisioning",
            "clock",
            "network",
            "keys",
            "module",
            "registration",
            "storage",
            "session",
        )
    ]
    for check in report["checks"]:
        assert set(check) == {"id", "status", "finding", "summary", "detail", "remedy"}


def test_nothing_listening_at_the_host_fails_exit_1_within_deadline(simulators) -> None:
    host, _, config = simulators
    config.write_text(config.read_text().replace(host.listen, "127.0.0.1:9"))
    started = time.monotonic()
    result = agent("selftest", "--json", "--config", str(config))
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    checks = {c["id"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["network"]["status"] == "fail"
    assert "127.0.0.1:9" in checks["network"]["detail"]
    assert checks["network"]["remedy"]
    assert elapsed < 8 + 3  # the per-check deadline plus process start


def test_human_report_in_chinese_and_english(simulators) -> None:
    _, _, config = simulators
    english = agent("selftest", "--lang", "en", "--only", "network,module", "--config", str(config))
    assert english.returncode == 0
    assert "[✓] network" in english.stdout and "Result: healthy" in english.stdout
    chinese = agent("selftest", "--config", str(config), env={"LANG": "zh_CN.UTF-8"})
    assert "[✓] 网络" in chinese.stdout and "结论" in chinese.stdout
    assert "[✗] 密钥" in chinese.stdout  # never signed in: no working keys, and what to do
    assert "→ 重新签到" in chinese.stdout
    assert chinese.returncode == 1 and not chinese.stderr


def test_no_configuration_at_all_fails_provisioning_and_says_how(tmp_path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
           "POS_AGENT_MODULE_URL": str(tmp_path / "no-module")}  # fmt: skip
    result = agent("selftest", "--json", "--only", "provisioning", env=env)
    assert result.returncode == 1
    [check] = json.loads(result.stdout)["checks"]
    assert check["status"] == "fail" and "agent provision" in check["remedy"]


def test_unreadable_config_and_bad_usage_exit_2(tmp_path) -> None:
    garbage = tmp_path / "agent.toml"
    garbage.write_text("[host\nprimary = ")
    result = agent("selftest", "--config", str(garbage))
    assert result.returncode == 2 and "not valid TOML" in result.stderr
    result = agent("selftest", "--only", "bogus", "--config", str(garbage))
    assert result.returncode == 2


def test_a_technicians_selftest_creates_and_changes_nothing(simulators, tmp_path) -> None:
    """Run as root before the service ever wrote (DESIGN.md section 6): no journal, no -wal or
    -shm, no directory appears; afterwards the journal the service made is left as it was."""
    _, _, config = simulators
    state = tmp_path / "state"
    text = config.read_text()
    start = text.index("[journal]")
    end = text.index("\n[", start + 1)
    config.write_text(
        text[:start] + f'[journal]\npath = "{state / "journal.sqlite3"}"\n' + text[end:]
    )
    result = agent("selftest", "--json", "--config", str(config))
    checks = {c["id"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["storage"]["status"] == "warn"
    assert "no journal yet" in checks["storage"]["summary"]
    assert not state.exists()
    assert agent("signin", "--config", str(config)).returncode == 0  # the service's first write
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in state.iterdir()}
    result = agent("selftest", "--json", "--config", str(config))
    assert result.returncode == 0, result.stdout
    after = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in state.iterdir()}
    assert after == before
