"""What the benchmarks share: percentiles, and their figures as one JSON object with the
interpreter and machine."""

from __future__ import annotations

import json
import platform
from typing import Any


def percentile(samples: list[float], fraction: float) -> float:
    """The sample below which ``fraction`` of them lie (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def print_figures(benchmark: str, figures: dict[str, Any]) -> None:
    print(
        json.dumps(
            {
                "benchmark": benchmark,
                **figures,
                "python": platform.python_version(),
                "machine": platform.machine(),
            },
            indent=2,
            ensure_ascii=False,
        )
    )
