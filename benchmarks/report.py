"""How every benchmark ends: its figures as one JSON object, with the interpreter and machine."""

from __future__ import annotations

import json
import platform
from typing import Any


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
