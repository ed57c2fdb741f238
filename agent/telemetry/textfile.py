"""The terminal's state as Prometheus text for node_exporter's textfile collector, for operators
who scrape instead of subscribing (DESIGN.md section 14). Written whole to a temporary file
beside the target and renamed over it, so the collector never reads half a file."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.telemetry.state import STATES


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _seconds(moment: str | None) -> float:
    return datetime.fromisoformat(moment).timestamp() if moment else 0.0


def render(message: dict[str, Any]) -> str:
    terminal = f'tid="{_label(message["tid"])}",mid="{_label(message["mid"])}"'
    lines = [
        "# HELP pos_agent_state 1 for the state the terminal is in (registered, recovering, "
        "unregistered, offline).",
        "# TYPE pos_agent_state gauge",
    ]
    for state in STATES:
        lines.append(f'pos_agent_state{{{terminal},state="{state}"}} '
                     f'{int(message["state"] == state)}')  # fmt: skip
    for name, help_text, value in (
        ("state_since_timestamp_seconds", "When the terminal entered its state.",
         _seconds(message["since"])),
        ("last_97_timestamp_seconds", "When the host last answered 97 (0: never).",
         _seconds(message["last_97"])),
        ("reversals_queued", "Reversals waiting to be sent.", message["reversals_queued"]),
        ("reversals_stuck", "Reversals that failed reversal.attempts tries in a row.",
         message["reversals_stuck"]),
        ("telemetry_events_dropped_total", "Events the full outbox dropped.",
         message["outbox_dropped"]),
    ):  # fmt: skip
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# HELP pos_agent_{name} {help_text}", f"# TYPE pos_agent_{name} {kind}",
                  f"pos_agent_{name}{{{terminal}}} {value}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def write(path: Path, message: dict[str, Any]) -> None:
    """Replace ``path`` with the metrics of ``message`` in one rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(render(message), encoding="utf-8")
    os.replace(temporary, path)
