"""Run every benchmark of the project, one after another (they would disturb each other), and
print one object with every figure and the machine they were measured on.

    python benchmarks/run.py --json            # the full run (about 4 minutes)
    python benchmarks/run.py --json --quick    # each benchmark's smoke run

Without ``--json`` it prints the headline figures as a table. ``benchmarks/README.md`` says what
each figure means and its target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name, arguments for the full run, arguments for --quick
BENCHMARKS = [
    ("wire", [], ["--quick"]),
    ("module", [], ["--quick"]),
    ("gateway", ["--count", "1000", "--awake"], ["--quick", "--awake"]),
    ("recovery", [], ["--quick"]),
    ("footprint", [], ["--quick"]),
    ("soak", ["--seconds", "60"], ["--seconds", "10"]),
    ("fleet", [], ["--quick"]),
]


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
        "architecture": platform.machine(),
        "cpu": model,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run(name: str, arguments: list[str]) -> dict[str, object]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(HERE / f"{name}.py"), *arguments],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return {"error": f"exit {result.returncode}", "stderr": result.stderr[-2000:]}
    figures = json.loads(result.stdout)
    figures.pop("python", None)
    figures.pop("machine", None)
    figures.pop("benchmark", None)
    return {**figures, "run_seconds": round(time.monotonic() - started, 1)}


HEADLINES = [
    ("wire", "0200 encode / decode µs", lambda f: f"{f['messages']['0200']['encode_us']} / "
                                                  f"{f['messages']['0200']['decode_us']}"),
    ("module", "MAC round trips per s over a pty", lambda f: f["mac_round_trips_per_s"]),
    ("module", "bytes to / from the module per MAC",
     lambda f: f"{f['bytes_to_module_per_mac']:.0f} / {f['bytes_from_module_per_mac']:.0f}"),
    ("gateway", "added ms p50 / p99, excl. module",
     lambda f: "{p50} / {p99}".format(**f["added_ms_excluding_module"])),
    ("gateway", "added ms p50, excl. module, CPUs kept awake",
     lambda f: f["cpus_kept_awake"]["added_ms_excluding_module"]["p50"]),
    ("gateway", "purchases per s, direct / through the agent",
     lambda f: f"{f['tps_direct']} / {f['tps_through_agent']}"),
    ("recovery", "97 to approved retry, excl. host round trips, ms p50",
     lambda f: f["recovery_excluding_host_round_trips_ms"]["p50"]),
    ("recovery", "self-check ms healthy / dead network",
     lambda f: f"{f['self_check_healthy_ms']['p50']} / {f['self_check_dead_network_ms']['p50']}"),
    ("footprint", "RSS MB idle", lambda f: f["rss_idle_mb"]),
    ("footprint", "start to READY ms / --help ms", lambda f: f"{f['ready_ms']} / {f['help_ms']}"),
    ("footprint", "idle wake-ups per s", lambda f: f["idle_wakeups_per_s"]),
    ("soak", "transactions / lost / duplicated",
     lambda f: f"{f['transactions']} / {f['lost']} / {f['duplicated']}"),
    ("fleet", "messages per s at the broker / agent fleet s",
     lambda f: f"{f['messages_per_s']} / {f['agent_fleet_s']}"),
    ("fleet", "telemetry's RSS MB / purchase p50 ratio",
     lambda f: f"{f['telemetry_rss_mb']} / {f['telemetry_p50_ratio']}"),
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    parser.add_argument("--quick", action="store_true", help="each benchmark's smoke run")
    args = parser.parse_args()
    report: dict[str, object] = {"machine": machine(), "quick": args.quick}
    for name, full, quick in BENCHMARKS:
        report[name] = run(name, quick if args.quick else full)
    failed = [name for name, *_ in BENCHMARKS if "error" in report[name]]  # type: ignore[operator]
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for name, label, pick in HEADLINES:
            figures = report[name]
            value = "failed" if "error" in figures else pick(figures)  # type: ignore[operator]
            print(f"{name:10} {label:55} {value}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
