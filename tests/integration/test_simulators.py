"""The host and TMS simulators as processes, through their admin interfaces."""

import json
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.processes import AGENT, HostProcess


def call(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def tms(tmp_path):
    process = subprocess.Popen(
        [AGENT, "sim", "tms", "--data", str(tmp_path / "tms.json")],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    url = json.loads(process.stdout.readline())["url"]
    yield url
    process.terminate()
    assert process.wait(timeout=10) == 0
    process.stdout.close()


RECORD = {"tid": "10000001", "mid": "898100012340001", "hosts": ["127.0.0.1:5000"]}


def test_tms_round_trip(tms, tmp_path) -> None:
    assert call("GET", f"{tms}/terminals/SIM0000000000001") == (
        404, {"error": "unknown module serial SIM0000000000001"},
    )  # fmt: skip
    assert call("PUT", f"{tms}/terminals/SIM0000000000001", RECORD)[0] == 200
    status, record = call("GET", f"{tms}/terminals/SIM0000000000001")
    assert status == 200
    assert record == {**RECORD, "tpdu_destination": "0003", "tpdu_source": "0000", "key_slot": 0}
    assert "SIM0000000000001" in json.loads((tmp_path / "tms.json").read_text())


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({**RECORD, "tid": "123"}, "tid must be a string of 8 characters"),
        ({**RECORD, "hosts": []}, "hosts must be a non-empty list of HOST:PORT strings"),
    ],
)
def test_tms_rejects_bad_records(tms, body: dict, error: str) -> None:
    assert call("PUT", f"{tms}/terminals/X", body) == (400, {"error": error})


def test_host_admin(tmp_path) -> None:
    host = HostProcess(tmp_path)
    try:
        admin = host.admin
        assert (
            call("POST", f"{admin}/terminals", {"tid": "20000002", "mid": "898100012340002"})[0]
            == 200
        )
        assert call("POST", f"{admin}/terminals/20000002/cancel", {})[0] == 200
        assert call("POST", f"{admin}/terminals/99999999/forget", {})[0] == 404
        assert call("POST", f"{admin}/faults", {"kind": "late", "count": 2})[0] == 200
        assert call("POST", f"{admin}/faults", {"kind": "explode"})[0] == 400
        state = host.state()
        assert {t["tid"]: t["status"] for t in state["terminals"]} == {
            "10000001": "active", "20000002": "cancelled",
        }  # fmt: skip
        assert state["faults"] == ["late", "late"]
        registry = json.loads((tmp_path / "registry.json").read_text())
        assert len(registry["terminals"]) == 2
    finally:
        host.stop()


def test_host_registry_garbage_exit_2(tmp_path) -> None:
    registry = tmp_path / "registry.json"
    registry.write_text("[1, 2")
    result = subprocess.run(
        [AGENT, "sim", "host", "--listen", "127.0.0.1:0", "--registry", str(registry)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert (
        result.returncode == 2
        and "host registry" in result.stderr
        and "unreadable" in result.stderr
    )
