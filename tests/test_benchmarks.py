"""Each benchmark runs and prints one JSON object (figures are not asserted: machines are noisy)."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_wire_benchmark_prints_json() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "wire.py"), "--quick"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    data = json.loads(result.stdout)
    for mti in ("0200", "0210"):
        assert data["messages"][mti]["encode_us"] > 0
        assert data["messages"][mti]["decode_us"] > 0
