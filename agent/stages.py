"""Where the time of one app request goes, stage by stage (issue 26), recorded only when a
benchmark asks for it: with ``POS_AGENT_STAGES=1`` in the agent's environment, each request's
path marks its stages (:func:`mark`) and the control command ``stages`` returns, per stage, the
time since the mark before it, and of that how long the thread that marked both was on a CPU
(the rest is waiting: for a device, a disk sync, a CPU or the GIL). Without it, a mark is one test
of a module constant: nothing is allocated, timed or kept.

A request's marks travel in a context variable, so they follow it into the worker threads
:class:`agent.blocking.Workers` run (they copy the context) without being passed around."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from contextvars import ContextVar, Token
from typing import Any

ENABLED = os.environ.get("POS_AGENT_STAGES") == "1"
KEPT = 20_000  # requests whose marks are kept for the next summary

# (stage, wall clock ns, the marking thread's CPU time ns, that thread)
Marks = list[tuple[str, int, int, int]]
_current: ContextVar[Marks | None] = ContextVar("pos_agent_stages", default=None)
_finished: deque[Marks] = deque(maxlen=KEPT)


def begin(first: str) -> Token[Marks | None] | None:
    """Start the marks of a request (``first``: its first stage); None when not enabled."""
    if not ENABLED:
        return None
    return _current.set([_now(first)])


def mark(stage: str) -> None:
    """The request being served has finished ``stage`` now."""
    if ENABLED:
        marks = _current.get()
        if marks is not None:
            marks.append(_now(stage))


def _now(stage: str) -> tuple[str, int, int, int]:
    return stage, time.perf_counter_ns(), time.thread_time_ns(), threading.get_ident()


def end(token: Token[Marks | None] | None, stage: str) -> None:
    """The last stage of the request begun with ``token``; its marks are kept."""
    if token is None:
        return
    mark(stage)
    marks = _current.get()
    _current.reset(token)
    if marks is not None:
        _finished.append(marks)


def summary(reset: bool = True) -> dict[str, Any]:
    """For each stage (in the order of the most common path), the microseconds since the mark
    before it: p50, p99 and mean over the requests that passed it; and the whole. A stage
    marked on the thread that marked the one before it also has ``cpu_us``: how long that
    thread ran meanwhile (a stage that crosses threads, a hand-off, has none); ``on_cpu_us``
    is, per request, the sum of those: its own work, but for the hand-offs'."""
    paths = list(_finished)
    if reset:
        _finished.clear()
    gaps: dict[str, list[float]] = {}
    ran: dict[str, list[float]] = {}
    order: list[str] = []
    totals, on_cpu = [], []
    for marks in paths:
        own = 0
        for (_, before, cpu_before, by), (stage, at, cpu, thread) in itertools.pairwise(marks):
            if stage not in gaps:
                gaps[stage], ran[stage] = [], []
                order.append(stage)
            gaps[stage].append((at - before) / 1000)
            if thread == by:
                ran[stage].append((cpu - cpu_before) / 1000)
                own += cpu - cpu_before
        totals.append((marks[-1][1] - marks[0][1]) / 1000)
        on_cpu.append(own / 1000)
    stages_us = {}
    for stage in order:
        stages_us[stage] = _figures(gaps[stage])
        if ran[stage]:
            stages_us[stage]["cpu_us"] = _figures(ran[stage])
    return {
        "requests": len(paths),
        "enabled": ENABLED,
        "stages_us": stages_us,
        "total_us": _figures(totals),
        "on_cpu_us": _figures(on_cpu),
    }


def _figures(values: list[float]) -> dict[str, Any]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "p50": round(ordered[len(ordered) // 2], 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "mean": round(sum(ordered) / len(ordered), 1),
        "count": len(ordered),
    }
