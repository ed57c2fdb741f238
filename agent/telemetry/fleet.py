"""``agent fleet`` (DESIGN.md section 14): the fleet as its terminals' retained states say it
is. Subscribing to ``<prefix>/+/state`` brings every terminal's latest state at once; the
summary counts them by state and cause and lists the terminals that need a person (unregistered,
a reversal stuck), the longest waiting first."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agent.config import TelemetryConfig
from agent.telemetry.publisher import broker_address, new_client

QUIET = 0.5  # seconds without a new retained state: all of them have come


class FleetError(Exception):
    """The broker cannot be reached or refused the subscription."""


class Watch:
    """A subscription to every terminal's state; ``states`` is kept up to date by paho's
    thread, keyed by topic."""

    def __init__(self, settings: TelemetryConfig, broker: str) -> None:
        self.states: dict[str, dict[str, Any]] = {}
        self.changed = threading.Event()
        self._last = time.monotonic()
        host, port, tls = broker_address(broker)
        self._client = new_client(f"pos-agent-fleet-{time.time_ns() % 10**9}")
        if tls:
            self._client.tls_set(ca_certs=settings.ca_file or None,
                                 certfile=settings.cert_file or None,
                                 keyfile=settings.key_file or None)  # fmt: skip
        topic = f"{settings.topic_prefix}/+/state"
        self._client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self._client.on_message = self._received
        try:
            self._client.connect(host, port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise FleetError(f"broker {broker}: {exc}") from None
        self._client.loop_start()

    def _received(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            state = json.loads(message.payload)
        except ValueError:
            return  # not one of ours
        if isinstance(state, dict):
            self.states[message.topic] = state
            self._last = time.monotonic()
            self.changed.set()

    def settle(self, deadline: float = 10.0) -> None:
        """Wait until the retained states have come: none new for ``QUIET`` seconds."""
        started = time.monotonic()
        self._last = started
        while time.monotonic() - self._last < QUIET and time.monotonic() - started < deadline:
            time.sleep(0.05)
        if not self._client.is_connected():
            raise FleetError("the broker did not accept the connection")

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _since(state: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(state["since"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return time.time()


def why_a_person(state: dict[str, Any]) -> str:
    """What a person must see to, or "" when nothing."""
    if state.get("state") == "unregistered":
        return str(state.get("cause") or "unregistered")
    stuck = state.get("reversals_stuck") or 0
    if stuck:
        return f"{stuck} reversal(s) stuck"
    return ""


def summarise(states: list[dict[str, Any]], now: Callable[[], float] = time.time) -> dict[str, Any]:
    need = []
    for state in states:
        why = why_a_person(state)
        if why:
            since = _since(state)
            need.append({"tid": state.get("tid", "?"), "mid": state.get("mid", ""),
                         "state": state.get("state"), "why": why, "since": state.get("since"),
                         "waiting_seconds": max(0, round(now() - since))})  # fmt: skip
    need.sort(key=lambda item: -item["waiting_seconds"])
    return {
        "terminals": len(states),
        "by_state": dict(Counter(str(s.get("state")) for s in states).most_common()),
        "by_cause": dict(
            Counter(str(s.get("cause")) for s in states if s.get("cause")).most_common()
        ),
        "need_a_person": need,
    }


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h" if days else f"{hours}h {rest // 60}m"


def render(summary: dict[str, Any]) -> str:
    states = ", ".join(f"{name} {count}" for name, count in summary["by_state"].items())
    lines = [f"{summary['terminals']} terminal(s): {states or 'none'}"]
    if summary["by_cause"]:
        lines.append("causes:")
        lines += [f"  {count:>5}  {cause}" for cause, count in summary["by_cause"].items()]
    need = summary["need_a_person"]
    lines.append(f"need a person: {len(need)}")
    lines += [f"  {t['tid']}  {_duration(t['waiting_seconds']):>8}  {t['state']}: {t['why']}"
              for t in need]  # fmt: skip
    return "\n".join(lines)
