"""``agent signin`` as a technician runs it: a real process against the host and module
simulators running as processes of their own."""

import subprocess

from tests.processes import AGENT, write_config


def signin(config) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENT, "signin", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_signin_loads_keys_and_prints_their_kcvs(simulators) -> None:
    host, _, config = simulators
    result = signin(config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("signed in as TID 10000001, KCVs {'PIK': '")
    assert host.state()["sessions"] == {"10000001": {"scheme": "003", "layout": 2}}


def test_signin_of_a_cancelled_terminal_fails_with_the_reason(simulators) -> None:
    host, _, config = simulators
    host.post("/terminals/10000001/cancel")
    result = signin(config)
    assert result.returncode == 1
    assert "97" in result.stderr and "terminal not registered" in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback


def test_signin_with_the_host_down_fails_naming_the_address(simulators, tmp_path) -> None:
    host, module, _ = simulators
    config = write_config(tmp_path, host, module)
    config.write_text(config.read_text().replace(host.listen, "127.0.0.1:9"))
    result = signin(config)
    assert result.returncode == 1
    assert "127.0.0.1:9" in result.stderr and "no host reachable" in result.stderr
