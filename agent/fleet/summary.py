"""``agent fleet`` (DESIGN.md section 14): the fleet as the retained messages say it is. Open
incidents first, then the terminals counted by state and by cause code, and those that need a
person (unregistered, a reversal stuck), the longest waiting first. Every string in it comes from
the broker and is escaped and clipped (:mod:`.shown`), in the JSON too; what could not be read is
counted, never shown."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.fleet import payloads, topics
from agent.fleet.shown import shown
from agent.fleet.subscription import Received
from agent.recovery.incident import CAUSE as INCIDENT_CAUSE


@dataclass
class Fleet:
    """The latest readable message of each topic, and how many could not be read."""

    prefix: str
    states: dict[str, payloads.State] = field(default_factory=dict)
    incidents: dict[str, payloads.Incident] = field(default_factory=dict)
    unreadable: int = 0

    def take(self, messages: Iterable[Received]) -> None:
        for message in messages:
            topic = topics.parse(self.prefix, message.topic)
            if topic is None:
                self.unreadable += 1
            elif topic.kind == "incident":
                self._take_incident(topic.key, message.payload)
            elif topic.kind == "state":
                self._take_state(topic.key, message.payload)

    def _take_incident(self, host: str, payload: bytes) -> None:
        if not payload:  # an empty retained message: closed
            self.incidents.pop(host, None)
            return
        try:
            self.incidents[host] = payloads.read_incident(payload)
        except payloads.Unreadable:
            self.unreadable += 1

    def _take_state(self, serial: str, payload: bytes) -> None:
        if not payload:  # a retained state deleted: the terminal is gone
            self.states.pop(serial, None)
            return
        try:
            self.states[serial] = payloads.read_state(serial, payload)
        except payloads.Unreadable:
            self.unreadable += 1


def why_a_person(state: payloads.State) -> str:
    """What a person must see to, or "" when nothing. A terminal paused by a host-side
    incident needs nobody at the terminal (DESIGN.md section 7): the acquirer's fault is the
    incident's, shown apart."""
    if state.state == "unregistered" and state.cause != INCIDENT_CAUSE:
        return state.cause or "unregistered"
    if state.reversals_stuck:
        return f"{state.reversals_stuck} reversal(s) stuck"
    return ""


def summarise(
    fleet: Fleet, too_large: int = 0, now: Callable[[], float] = time.time
) -> dict[str, object]:
    states = list(fleet.states.values())
    need = []
    for state in states:
        why = why_a_person(state)
        if why:
            waiting = now() - state.since_at if state.since_at is not None else 0
            need.append(
                {
                    "serial": shown(state.serial),
                    "tid": shown(state.tid),
                    "mid": shown(state.mid),
                    "state": shown(state.state),
                    "why": shown(why),
                    "since": shown(state.since),
                    "waiting_seconds": max(0, round(waiting)),
                }
            )
    need.sort(key=lambda item: (-item["waiting_seconds"], item["serial"]))
    incidents = [
        {
            "host": shown(host),
            "nii": shown(incident.nii),
            "opened": payloads.iso(incident.opened),
            "terminals": incident.terminals,
            "evidence": [shown(serial) for serial in incident.evidence],
        }
        for host, incident in sorted(fleet.incidents.items(), key=lambda i: i[1].opened)
    ]
    by_state = Counter(shown(s.state) for s in states)
    by_cause = Counter(shown(s.cause) for s in states if s.cause)
    return {
        "incidents": incidents,
        "terminals": len(states),
        "by_state": dict(by_state.most_common()),
        "by_cause": dict(by_cause.most_common()),
        "need_a_person": need,
        "unreadable": fleet.unreadable,
        "too_large": too_large,
    }


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h" if days else f"{hours}h {rest // 60}m"


def render(summary: dict) -> str:
    """The summary as text; its strings are already escaped and clipped."""
    incidents = summary["incidents"]
    lines = [f"open incidents: {len(incidents) or 'none'}"]
    for incident in incidents:
        where = f"{incident['host']} (NII {incident['nii'] or '?'})"
        evidence = ", ".join(incident["evidence"])
        lines.append(
            f"  {where}: host-side since {incident['opened']}, "
            f"{incident['terminals']} terminal(s): {evidence}"
        )
    states = ", ".join(f"{name} {count}" for name, count in summary["by_state"].items())
    lines.append(f"{summary['terminals']} terminal(s): {states or 'none'}")
    if summary["by_cause"]:
        lines.append("causes:")
        lines += [f"  {count:>5}  {cause}" for cause, count in summary["by_cause"].items()]
    need = summary["need_a_person"]
    lines.append(f"need a person: {len(need)}")
    lines += [
        f"  {t['tid'] or '?'} ({t['serial']})  {_duration(t['waiting_seconds']):>8}  "
        f"{t['state']}: {t['why']}"
        for t in need
    ]
    if summary["unreadable"] or summary["too_large"]:
        lines.append(
            f"skipped: {summary['unreadable']} unreadable, "
            f"{summary['too_large']} over {payloads.MAX_PAYLOAD // 1024} KiB"
        )
    return "\n".join(lines)
