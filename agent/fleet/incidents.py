"""Host-side incidents (DESIGN.md section 14), decided from what the watcher has heard, without
I/O or a clock of its own: the watcher tells an :class:`IncidentBook` each state, self-check,
event and incident it hears, with the time, and asks :meth:`IncidentBook.decide` what to publish.

- A terminal *reports* at the time of its latest 97 (an event, or ``last_97`` in its state) or of
  becoming unregistered (the event, or ``since`` of an unregistered state). These are the
  terminal's own times: an event that waited in its outbox through a broker outage counts when it
  happened, not when it arrived, and watchers that see the same retained states judge alike. A time
  in the future counts as the moment it is heard.
- A report counts for the terminal's acquirer host while it is within ``window``, later than the
  last close of that host's incident, not followed by the terminal being registered again (a
  ``registered`` state whose ``since`` is not earlier), and while the terminal's self-check is
  healthy. A terminal whose self-check has not been heard counts as healthy: the many terminals
  at once are the evidence, the self-check a 97 sets off often arrives after the 97, and an agent
  that never sends one (telemetry just enabled) would otherwise hide an outage; a self-check heard
  failing (other than the host's answer) keeps the terminal out.
- An incident opens when at least ``min_terminals`` reports count for one host and none is open for
  it; one heard on the broker is open, whoever opened it. The broker keeps one retained message per
  host: there is one incident per host however many watchers run.
- While it is open its count rises when more terminals count than it says, and never falls:
  watchers hear different shares of the events, and a count that only rises cannot flap between
  two. Every terminal of the host hears each new count, so it is published when it is
  :data:`GROWTH` times the last one heard, or :data:`GROW_EVERY` seconds after it.
- It closes when every terminal that reported since ``window`` before it opened is registered
  again, or after ``window`` without a 97 from any of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from agent.fleet.payloads import Acquirer, Event, Incident, State, incident_message
from agent.fleet.topics import is_level

EVIDENCE = 10  # serials an incident names
GROWTH = 1.1  # a count this much larger is published at once
GROW_EVERY = 30.0  # seconds after the last count heard, a larger one is published anyway


@dataclass
class _Terminal:
    host: str = ""
    nii: str = ""
    state: str = ""
    since: float | None = None
    last_97: float | None = None
    unregistered_at: float | None = None
    healthy: bool | None = None  # None: no self-check heard

    def reported(self) -> float | None:
        known = [t for t in (self.last_97, self.unregistered_at) if t is not None]
        return max(known) if known else None

    def registered_since(self, moment: float) -> bool:
        return self.state == "registered" and (self.since is None or self.since >= moment)


@dataclass(frozen=True)
class Publication:
    """A retained message for ``<prefix>/incidents/<host>``: the incident, or None for the empty
    message that closes it; ``action`` and ``why`` for the log."""

    host: str
    action: str  # "opened", "grown" or "closed"
    message: dict[str, Any] | None
    why: str


def _later(known: float | None, moment: float) -> float:
    return moment if known is None else max(known, moment)


class IncidentBook:
    def __init__(self, min_terminals: int, window: float) -> None:
        self.min_terminals = min_terminals
        self.window = window
        self._terminals: dict[str, _Terminal] = {}
        self._by_host: dict[str, set[str]] = defaultdict(set)
        self._reported: dict[str, float] = {}  # host: its latest report (the hosts to look at)
        self._open: dict[str, Incident] = {}
        self._closed_at: dict[str, float] = {}
        self._counted_at: dict[str, float] = {}  # host: when its incident's count was last heard

    # ------------------------------------------------------------------ what the watcher heard

    def heard_state(self, state: State, now: float) -> None:
        terminal = self._terminal(state.serial, state.acquirer)
        terminal.state, terminal.since = state.state, state.since_at
        if state.last_97 is not None:
            terminal.last_97 = _later(terminal.last_97, min(state.last_97, now))
        if state.state == "unregistered" and state.since_at is not None:
            terminal.unregistered_at = _later(terminal.unregistered_at, min(state.since_at, now))
        self._note(terminal)

    def heard_selftest(self, serial: str, healthy: bool | None) -> None:
        """``healthy`` None: the self-check could not be read, which is as good as not heard."""
        self._terminal(serial, None).healthy = healthy

    def heard_event(self, serial: str, event: Event, now: float) -> None:
        terminal = self._terminal(serial, event.acquirer)
        at = now if event.at is None else min(event.at, now)
        if event.kind == "97":
            terminal.last_97 = _later(terminal.last_97, at)
        elif event.kind == "unregistered":
            terminal.unregistered_at = _later(terminal.unregistered_at, at)
        self._note(terminal)

    def heard_incident(self, host: str, incident: Incident | None, now: float) -> None:
        """An incident on the broker (retained, another watcher's, or our own coming back);
        None: its empty message, it was closed."""
        if incident is None:
            if self._open.pop(host, None) is not None:
                self._closed_at[host] = now
            return
        known = self._open.get(host)
        if known is not None and known.opened == incident.opened:
            # ours or the same one again: its count only rises
            incident = dataclasses.replace(
                incident, terminals=max(known.terminals, incident.terminals)
            )
        # else another watcher's opening came after ours: the broker retains the last one
        self._open[host] = incident
        self._counted_at[host] = now

    def forget_incidents(self) -> None:
        """After a new connection: the broker sends the open incidents again, and those closed
        while the watcher was away are not among them."""
        self._open.clear()

    # ------------------------------------------------------------------ what to publish

    def decide(self, now: float) -> list[Publication]:
        """What to publish now; the book takes it as done (the broker sends it back, which is
        then nothing new)."""
        publications = []
        for host in sorted(set(self._reported) | set(self._open)):
            incident = self._open.get(host)
            if incident is None:
                publication = self._maybe_open(host, now)
            else:
                publication = self._maybe_close(host, incident, now) or self._maybe_grow(
                    host, incident, now
                )
            if publication is not None:
                publications.append(publication)
            if host not in self._open and self._reported.get(host, now) < now - self.window:
                del self._reported[host]  # nothing of it can count any more
        return publications

    @property
    def open_hosts(self) -> list[str]:
        return sorted(self._open)

    @property
    def terminals(self) -> int:
        return len(self._terminals)

    def _maybe_open(self, host: str, now: float) -> Publication | None:
        counting = self._counting(host, now)
        if len(counting) < self.min_terminals:
            return None
        nii = self._terminals[counting[0]].nii
        # whole seconds: the message says "opened" to the second, and when it comes back from
        # the broker it is recognised as this one
        opened = float(math.floor(now))
        incident = Incident(nii, opened, len(counting), tuple(counting[:EVIDENCE]))
        self._open[host] = incident
        self._counted_at[host] = now
        why = f"{len(counting)} terminals refused within {self.window:.0f} s"
        return Publication(host, "opened", incident_message(host, incident), why)

    def _maybe_close(self, host: str, incident: Incident, now: float) -> Publication | None:
        members = [
            (terminal, reported)
            for serial in self._by_host.get(host, ())
            for terminal in [self._terminals[serial]]
            for reported in [terminal.reported()]
            if reported is not None
            and reported >= incident.opened - self.window
            and terminal.healthy is not False
        ]
        why = ""
        if members and all(t.registered_since(reported) for t, reported in members):
            why = f"its {len(members)} terminals are registered again"
        else:
            last_97 = max((t.last_97 for t, _ in members if t.last_97 is not None), default=0.0)
            if now - max(last_97, incident.opened) > self.window:
                why = f"no 97 from its terminals for {self.window:.0f} s"
        if not why:
            return None
        del self._open[host]
        self._closed_at[host] = now
        return Publication(host, "closed", None, why)

    def _maybe_grow(self, host: str, incident: Incident, now: float) -> Publication | None:
        counting = self._counting(host, now)
        if len(counting) <= incident.terminals:
            return None
        recently = now - self._counted_at.get(host, now - GROW_EVERY) < GROW_EVERY
        if recently and len(counting) < incident.terminals * GROWTH:
            return None
        evidence = list(incident.evidence)
        evidence += [serial for serial in counting if serial not in evidence]
        grown = dataclasses.replace(
            incident, terminals=len(counting), evidence=tuple(evidence[:EVIDENCE])
        )
        self._open[host] = grown
        self._counted_at[host] = now
        why = f"{len(counting)} terminals refused within {self.window:.0f} s"
        return Publication(host, "grown", incident_message(host, grown), why)

    # ------------------------------------------------------------------ the terminals

    def _counting(self, host: str, now: float) -> list[str]:
        """The serials whose report counts for ``host`` now, the earliest report first."""
        floor = max(now - self.window, self._closed_at.get(host, now - self.window))
        counting = []
        for serial in self._by_host.get(host, ()):
            terminal = self._terminals[serial]
            reported = terminal.reported()
            if (
                reported is not None
                and reported > floor
                and terminal.healthy is not False
                and not terminal.registered_since(reported)
            ):
                counting.append((reported, serial))
        return [serial for _, serial in sorted(counting)]

    def _terminal(self, serial: str, acquirer: Acquirer | None) -> _Terminal:
        terminal = self._terminals.setdefault(serial, _Terminal())
        if acquirer is not None and is_level(acquirer.host) and acquirer.host != terminal.host:
            # a host that cannot be a topic level (hostile, or broken) places no terminal
            self._by_host[terminal.host].discard(serial)
            self._by_host[acquirer.host].add(serial)
            terminal.host = acquirer.host
        if acquirer is not None and acquirer.host == terminal.host:
            terminal.nii = acquirer.nii
        return terminal

    def _note(self, terminal: _Terminal) -> None:
        reported = terminal.reported()
        if terminal.host and reported is not None:
            self._reported[terminal.host] = _later(self._reported.get(terminal.host), reported)
