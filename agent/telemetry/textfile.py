"""The terminal's state as Prometheus text for node_exporter's textfile collector, for operators
who scrape instead of subscribing (DESIGN.md section 14).

Every series is keyed by the module serial, which never changes (a TID changes with
re-provisioning and would leave a stale series behind); the TID, MID, acquirer and version are
labels of ``pos_agent_info`` only, and the cause code a label of ``pos_agent_cause_info``, so
that a change of either replaces one info series instead of every series of the terminal.

The file is written whole to a temporary file beside the target, mode 0644 whatever the
service's umask (node_exporter runs as another user), and renamed over the target, so the
collector never reads half a file. Its temporary name does not end in ``.prom``: the collector
never reads it either."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.telemetry.state import STATES

MODE = 0o644
LABEL_MAX = 128  # characters of one label value: a TID is 8, a cause code a few dozen
CLIPPED = "…"
# What must not reach a label is what str.isprintable() refuses: control characters (newline,
# ESC of an ANSI sequence), format characters (bidirectional overrides, zero-width characters:
# text that shows other than it is), lone surrogates (not encodable as UTF-8: the write would
# fail), the line and paragraph separators (U+2028, U+2029), which many readers take for a new
# line, and spaces other than " ". (unicodedata would name the categories, at the price of a
# module the service otherwise never loads.)

# The counters of the agent's life: the key in ``counters``, the metric and its help.
COUNTERS = (
    ("97", "pos_agent_97_total", "Answers 97 (terminal not registered) the host gave."),
    ("recoveries", "pos_agent_recoveries_total", "Recoveries that completed."),
    ("refused_requests", "pos_agent_refused_requests_total",
     "Single requests the host refused while the terminal stayed registered."),
)  # fmt: skip


def label_value(value: object) -> str:
    """``value`` as the inside of a quoted label value: characters that cannot be shown become
    U+FFFD, long text is clipped, and backslash and double quote are escaped as the text format
    requires (a newline cannot remain: it is a control character)."""
    text = "".join(c if c.isprintable() else "\ufffd" for c in str(value or ""))
    if len(text) > LABEL_MAX:
        text = text[: LABEL_MAX - len(CLIPPED)] + CLIPPED
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{name}="{label_value(value)}"' for name, value in labels.items()) + "}"


def _seconds(moment: object) -> float:
    """An ISO 8601 time of the message as epoch seconds; 0 for none (the metric's help says
    so), and for a time that does not parse, rather than no file at all."""
    if not isinstance(moment, str) or not moment:
        return 0.0
    try:
        return datetime.fromisoformat(moment).timestamp()
    except ValueError:
        return 0.0


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"] + [
        f"{name}{labels} {value}" for labels, value in samples
    ]


def render(message: dict[str, Any], counters: Mapping[str, int]) -> str:
    """The metrics of the retained state ``message`` (DESIGN.md section 14) and the agent's
    ``counters`` ("97", "recoveries", "refused_requests": monotonic while the agent runs)."""
    serial = message.get("serial", "")
    terminal = _labels(serial=serial)
    acquirer = message.get("acquirer")
    acquirer_host = acquirer.get("host", "") if isinstance(acquirer, dict) else ""
    state = message.get("state")
    # exactly the labels DESIGN.md pins, in its order; the merchant and the acquirer apart
    info = _labels(version=message.get("version", ""), serial=serial, tid=message.get("tid", ""))
    merchant = _labels(serial=serial, mid=message.get("mid", ""), acquirer=acquirer_host)
    lines = [
        *_family("pos_agent_info", "gauge",
                 "The terminal (by module serial): the agent's version and the TID.",
                 [(info, 1)]),
        *_family("pos_agent_acquirer_info", "gauge",
                 "The terminal (by module serial): its MID and acquirer host.",
                 [(merchant, 1)]),
        *_family("pos_agent_state", "gauge",
                 "1 for the state the terminal is in (registered, recovering, unregistered, "
                 "offline).",
                 [(_labels(serial=serial, state=s), int(state == s)) for s in STATES]),
        *_family("pos_agent_cause_info", "gauge",
                 "Why the terminal is not registered: the stable cause code (empty when it is).",
                 [(_labels(serial=serial, cause=message.get("cause", "")), 1)]),
        *_family("pos_agent_state_since_timestamp_seconds", "gauge",
                 "When the terminal entered its state.",
                 [(terminal, _seconds(message.get("since")))]),
        *_family("pos_agent_last_97_timestamp_seconds", "gauge",
                 "When the host last answered 97 (0: never).",
                 [(terminal, _seconds(message.get("last_97")))]),
        *_family("pos_agent_reversals_queued", "gauge", "Reversals waiting to be sent.",
                 [(terminal, _count(message.get("reversals_queued")))]),
        *_family("pos_agent_reversals_stuck", "gauge",
                 "Reversals that failed reversal.attempts tries in a row.",
                 [(terminal, _count(message.get("reversals_stuck")))]),
        *_family("pos_agent_telemetry_events_dropped_total", "counter",
                 "Events the full outbox dropped.",
                 [(terminal, _count(message.get("outbox_dropped")))]),
    ]  # fmt: skip
    for key, name, help_text in COUNTERS:
        lines += _family(name, "counter", help_text, [(terminal, _count(counters.get(key)))])
    return "\n".join(lines) + "\n"


def write(path: Path, message: dict[str, Any], counters: Mapping[str, int]) -> None:
    """Replace ``path`` with the metrics of ``message`` and ``counters`` in one rename."""
    text = render(message, counters).encode("utf-8")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # one left by a process of the same id that died before its rename: never written through
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 MODE)  # fmt: skip
    try:
        try:
            os.fchmod(fd, MODE)  # the mode of os.open is masked by the umask (the unit's: 0077)
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        # No fsync: the file is rewritten every minute, and a terminal's flash is spared a
        # sync for each; the rename alone keeps a reader from seeing half a file.
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
