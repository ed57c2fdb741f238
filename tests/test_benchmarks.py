"""Each benchmark runs and prints one JSON object (figures are not asserted: machines are noisy)."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_quick(name: str, *options: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), "--quick", *options],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_wire_benchmark_prints_json() -> None:
    data = run_quick("wire.py")
    for mti in ("0200", "0210"):
        assert data["messages"][mti]["encode_us"] > 0
        assert data["messages"][mti]["decode_us"] > 0
    assert data["messages"]["0210 for the app"]["encode_us"] > 0


def test_module_benchmark_prints_json() -> None:
    data = run_quick("module.py")
    assert data["mac_round_trips_per_s"] > 0
    assert data["bytes_to_module_per_mac"] == data["request_frame_bytes"] + 1
    assert data["bytes_from_module_per_mac"] == data["response_frame_bytes"] + 1
    assert data["retransmit_after_lost_ack_ms"] > data["retransmit_after_nak_ms"]


def test_gateway_benchmark_prints_json() -> None:
    data = run_quick("gateway.py", "--awake", "--line")
    for path in ("direct_ms", "through_agent_ms", "pin_purchase_through_agent_ms"):
        assert 0 < data[path]["p50"] <= data[path]["p99"]
    assert data["module_pin_block_ms"] > 0
    assert data["tps_direct"] > 0 and data["tps_through_agent"] > 0
    assert data["module_serial_ms_per_purchase"] > 0
    assert data["journal_sync_ms_per_purchase"] > 0
    # the two commits as the agent met them: its stage trace marks where each row ends
    assert data["journal_commits_in_the_run_ms"] > 0
    assert {"pending-row", "pending-synced", "outcome-row", "outcome-synced"} <= set(
        data["stages"]["stages_us"]
    )
    # and how much of the path the agent spent on a CPU: the sync waits, it does not work
    synced = data["stages"]["stages_us"]["pending-synced"]
    assert synced["cpu_us"]["p50"] <= synced["p50"]
    assert 0 < data["agent_on_cpu_ms"] < data["through_agent_ms"]["p50"]
    # the same run with every CPU kept from idling, and its spinners gone after it
    assert data["cpus_kept_awake"]["through_agent_ms"]["p50"] > 0
    # and with the module answering in a real line's time: two MACs of 3.2 ms each at least
    line = data["module_on_a_115200_line"]
    assert line["line_ms_per_command"] == 3.21
    assert line["module_serial_ms_per_purchase"] >= 2 * line["line_ms_per_command"]
    spinners = subprocess.run(["pgrep", "-f", "SCHED_IDLE"], capture_output=True, text=True)
    assert spinners.stdout == ""


def test_recovery_benchmark_prints_json() -> None:
    data = run_quick("recovery.py")
    assert data["rounds"] == 5
    assert 0 < data["recovery_excluding_host_round_trips_ms"]["p50"] <= data["recovery_ms"]["p50"]
    assert data["dead_network"]["network_check_failed"] is True
    assert data["self_check_healthy_ms"]["p50"] > 0


def test_footprint_benchmark_prints_json() -> None:
    data = run_quick("footprint.py")
    assert data["rss_idle_mb"] > 0 and data["ready_ms"] > 0 and data["help_ms"] > 0
    assert data["idle_wakeups_per_s"] >= 0
    assert data["installed_kib"]["pos-agent"] > 0


def test_soak_prints_json_and_loses_nothing() -> None:
    result = subprocess.run(
        # rechecks after 5 s, not 30: the run waits for them before it counts the ledger
        [sys.executable, str(BENCHMARKS / "soak.py"), "--seconds", "6", "--fault-every", "1",
         "--recheck-after", "5"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    data = json.loads(result.stdout)
    assert data["transactions"] > 0 and data["agent_alive"]
    assert (data["lost"], data["duplicated"], data["approved_then_reversed"]) == (0, 0, 0)
    assert data["reversals_still_queued"] == 0
    assert data["rss_mb"]["halfway"] > 0 and "rss_growth_second_half_mb" in data


def test_the_runner_lists_every_benchmark() -> None:
    """The full run takes minutes (benchmarks/run.py --json); here: that it knows each script."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import run
    finally:
        sys.path.remove(str(BENCHMARKS))
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")} - {"run", "report"}
    assert {name for name, *_ in run.BENCHMARKS} == scripts
    assert set(run.machine()) >= {"python", "cpu", "cpus_usable", "memory_gib"}


def test_fleet_benchmark_prints_json() -> None:
    data = run_quick("fleet.py")
    assert data["messages_acknowledged"] == data["terminals"] * 4  # state, self-check, 2 events
    assert data["terminals_seen"] == data["terminals"]
    assert data["agent_with_telemetry"]["purchase_p50_ms"] > 0
