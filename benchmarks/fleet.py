"""Fleet telemetry at scale (DESIGN.md section 14): a real Mosquitto, N simulated terminals
publishing what pos-agent publishes, two `agent fleet watch` processes opening and closing a
host-side incident, `agent fleet` over the N retained states, and what telemetry costs one real
agent. Prints one JSON object.

- agent (first, while the machine is quiet): one `agent run` between the host and module
  simulators without and then with telemetry to the broker: RSS idle after the sign-in and the
  purchases, CPU time and purchase latency over the same purchases; two rounds, the second
  reported (the first warms the caches both depend on). Its `agent selftest --json` is the
  self-check report the simulated terminals publish. What telemetry adds is then taken apart in
  an interpreter of its own (:data:`PARTS`).
- broker: two watchers subscribe; N clients connect as the agent's publisher does (MQTT 5, client
  id ``pos-agent-<serial>``, a will with its delay, a session expiry, the acquirer's incident topic
  subscribed), then each publishes its retained state (made by ``state_message``) and self-check
  and two events at QoS 1. The N terminals are spread over 5 acquirer hosts. Connections and
  messages acknowledged per second, Mosquitto's RSS and CPU time per phase, the time until both
  watchers have heard all N; at the end Mosquitto is restarted from its persistence file, so
  its RSS holds the retained messages alone. The clients share one thread and one select
  loop on paho's external-loop interface: the broker and the protocol are measured, not Python
  threads.
- incident: the terminals of one host (N/5: 2,000 of 10,000) report a 97 spread over a few
  seconds, as an agent does: the event, then the ``recovering`` state, and since a state change
  makes the will stale, a new connection with a new will that sends the state and the self-check
  again. An independent subscriber times the retained incident from the 20th 97 (the threshold),
  counts the incident messages; one incident must be retained. Then the same terminals recover
  (a ``recovered`` event, the ``registered`` state, a new connection) and the close (the empty
  retained message) is timed.
- fleet: `agent fleet --json`, as an operator runs it (the interpreter's start and its 0.5 s
  quiet wait included), over no terminal and over the N retained states: wall time and the
  process's peak RSS (its own rusage, from wait4).

Mosquitto gets ``max_connections -1`` and a queue per subscriber for a burst of the whole fleet
(:func:`broker_lines`); the benchmark raises RLIMIT_NOFILE, which Mosquitto inherits: one
descriptor per connection on each side.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from report import percentile, print_figures

from agent.config import TelemetryConfig
from agent.fleet.payloads import read_selftest
from agent.telemetry import mqtt as connection
from agent.telemetry.mqtt import mqtt
from agent.telemetry.publisher import CONNECTION_LOST, KEEPALIVE, WILL_DELAY, WILL_GAP
from agent.telemetry.state import Identity, Topics, iso, offline, state_message
from benchmarks.footprint import compile_bytecode, rss_mb
from benchmarks.gateway import AgentClient
from tests.processes import (
    AGENT,
    MOSQUITTO,
    AgentProcess,
    HostProcess,
    ModuleProcess,
    MosquittoProcess,
    control,
    wait_for,
    write_config,
)

PREFIX = "pos"
HOSTS = 5  # acquirer hosts the fleet is spread over; the last one has the incident
INCIDENT_HOST = f"10.0.0.{HOSTS}:5000"
NII = "0003"
MID = "898100012340001"
WATCHERS = 2
MIN_TERMINALS, WINDOW = 20, 300  # [fleet] incident_min_terminals, incident_window (defaults)
CONNECTING = 64  # connections begun and not yet acknowledged, at most (the listen backlog)
EVENTS = (  # the broker phase's two events of each terminal: a morning's downloads
    ("parameters-downloaded", "session.parameters-downloaded", {"chain": "terminal-parameters"}),
    ("parameters-downloaded", "session.parameters-downloaded", {"chain": "ca-keys"}),
)
HOUR = 3600.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_lines(terminals: int) -> list[str]:
    """Mosquitto's settings for N terminals: no limit of connections (the default of 2.0 too,
    said here), and a queue per subscriber that holds a burst of the whole fleet's states,
    self-checks and events (about 3 messages per terminal to each watcher). With the default
    queue (1,000 beyond the 20 in flight) Mosquitto drops a watcher's messages ("Outgoing
    messages are being dropped") as soon as 500 terminals publish at once: a watcher, one
    Python process, reads fewer messages per second than the broker sends."""
    return ["max_connections -1", f"max_queued_messages {max(1000, 4 * terminals)}"]


def kib_per_1000(megabytes: float, count: int) -> int:
    """``megabytes`` that ``count`` terminals took, in KiB per 1,000 of them."""
    return round(megabytes * 1024 / count * 1000)


def open_files_limit(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise RuntimeError("no open files limit")


def raise_open_files(needed: int) -> int:
    """RLIMIT_NOFILE to at least ``needed`` (the hard limit too, where allowed: root); the
    processes started afterwards (Mosquitto) inherit it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if needed > hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        raise SystemExit(f"fleet.py: {needed} open files needed, the hard limit is {hard}")
    return hard


def mosquitto_version() -> str:
    result = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, check=False)
    found = re.search(r"mosquitto version (\S+)", result.stdout + result.stderr)
    return found.group(1) if found else "unknown"


# ---------------------------------------------------------------------- the simulated terminals


@dataclass
class Terminal:
    serial: str
    tid: str
    acquirer: dict[str, str]
    topics: Topics
    state: dict[str, Any]  # the last state message, without seq
    selftest: str  # its retained self-check report, JSON
    seq: int = 0
    event_id: int = 0
    client: Any = None


def status(tid: str, state: str, cause: str = "", code: str = "") -> dict[str, Any]:
    """What ``agent status`` says, as much of it as the state message reads."""
    return {"tid": tid, "mid": MID, "state": state, "cause": cause, "message": None,
            "last_refusal": {"code": code} if code else None, "host": {},
            "reversals_queued": 0, "reversals_stuck": 0}  # fmt: skip


class Fleet:
    """N terminals' paho clients on paho's external-loop interface: one selector, a socket
    watched for writing only while paho has something to write on it."""

    def __init__(self, broker: str) -> None:
        self.broker = broker
        self.settings = TelemetryConfig(broker=broker)  # MQTT 5, as the agent's default
        self.selector = selectors.DefaultSelector()
        self.terminals: list[Terminal] = []
        self.begun = self.connacks = 0  # connections begun, and acknowledged, ever
        self.connected = self.subscribed = self.acknowledged = 0  # connected: now
        self.published = 0  # messages the terminals published
        self.incident_deliveries = 0  # incident messages the terminals received
        self._misc_at = time.monotonic()

    def add(self, sock: socket.socket, callback: Callable[[], None]) -> None:
        """Another socket to read in the same loop (a watcher's notify socket)."""
        self.selector.register(sock, selectors.EVENT_READ, callback)

    def connect(self, terminal: Terminal) -> None:
        """As the agent's publisher connects: a fresh client, the will made from the last
        state (offline, ``since`` kept, a seq above the connection's states)."""
        while self.begun - self.connacks >= CONNECTING:
            self.turn(0.05)
        client = connection.new_client(f"pos-agent-{terminal.serial}", self.settings, self.broker)
        client.user_data_set(terminal)
        client.on_socket_open = self._opened
        client.on_socket_close = self._closed
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._written
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        will = {**offline(terminal.state, CONNECTION_LOST, None), "seq": terminal.seq + WILL_GAP}
        client.will_set(terminal.topics.state, json.dumps(will, ensure_ascii=False), qos=1,
                        retain=True, properties=connection.will_properties(WILL_DELAY))  # fmt: skip
        terminal.client = client
        self.begun += 1
        connection.connect(client, self.broker, KEEPALIVE, WILL_DELAY)

    def publish_state(self, terminal: Terminal) -> None:
        terminal.seq += 1
        payload = json.dumps({**terminal.state, "seq": terminal.seq}, ensure_ascii=False)
        terminal.client.publish(terminal.topics.state, payload, 1, True)
        self.published += 1

    def publish_selftest(self, terminal: Terminal) -> None:
        terminal.client.publish(terminal.topics.selftest, terminal.selftest, 1, True)
        self.published += 1

    def publish_event(self, terminal: Terminal, kind: str, code: str, detail: dict,
                      at: float) -> None:  # fmt: skip
        terminal.event_id += 1
        event = {"id": terminal.event_id, "kind": kind, "code": code, "at": iso(at),
                 "acquirer": terminal.acquirer, "detail": detail}  # fmt: skip
        terminal.client.publish(terminal.topics.event, json.dumps(event, ensure_ascii=False), 1)
        self.published += 1

    def change_state(self, terminal: Terminal, state: dict[str, Any]) -> None:
        """What the publisher does on a change of state: the state, then (the will is stale)
        a clean DISCONNECT and a new connection with a new will, on which the retained state
        and self-check go again (in :meth:`_on_connect`)."""
        terminal.state = state
        self.publish_state(terminal)
        old = terminal.client
        old.disconnect()
        old.loop_write()  # the DISCONNECT before the new CONNECT: no session take-over
        self.connect(terminal)

    def disconnect_all(self) -> None:
        """Clean disconnections that end the sessions at once (no will, nothing kept)."""
        properties = Properties(PacketTypes.DISCONNECT)
        properties.SessionExpiryInterval = 0
        for terminal in self.terminals:
            terminal.client.disconnect(properties=properties)
        self.pump_until(lambda: self.connected == 0, 60, "the clean disconnections")

    def turn(self, timeout: float) -> None:
        for key, mask in self.selector.select(timeout):
            target = key.data
            if not isinstance(target, mqtt.Client):
                target()
                continue
            if mask & selectors.EVENT_WRITE:
                target.loop_write()
            if mask & selectors.EVENT_READ:
                target.loop_read()
        now = time.monotonic()
        if now - self._misc_at > KEEPALIVE / 4:  # keep-alive pings, as paho's loop would
            self._misc_at = now
            for terminal in self.terminals:
                terminal.client.loop_misc()

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.turn(min(left, 0.05))

    def pump_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not done():
            if time.monotonic() > end:
                raise TimeoutError(f"waited {timeout} s for {what}")
            self.turn(0.05)

    # paho's callbacks (VERSION2 signatures), in this thread

    def _opened(self, client: Any, terminal: Terminal, sock: socket.socket) -> None:
        self.selector.register(sock, selectors.EVENT_READ, client)

    def _closed(self, client: Any, terminal: Terminal, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)

    def _want_write(self, client: Any, terminal: Terminal, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _written(self, client: Any, terminal: Terminal, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.modify(sock, selectors.EVENT_READ, client)

    def _on_connect(self, client: Any, terminal: Terminal, flags: Any, reason: Any,
                    properties: Any) -> None:  # fmt: skip
        if reason.is_failure:
            raise RuntimeError(f"{terminal.serial}: connection refused: {reason}")
        self.connacks += 1
        self.connected += 1
        client.subscribe(terminal.topics.incident(terminal.acquirer["host"]), qos=1)
        if terminal.seq:  # a new connection of a terminal that has published: it all goes again
            self.publish_state(terminal)
            self.publish_selftest(terminal)

    def _on_disconnect(self, *_: Any) -> None:
        self.connected -= 1

    def _on_subscribe(self, *_: Any) -> None:
        self.subscribed += 1

    def _on_publish(self, *_: Any) -> None:
        self.acknowledged += 1

    def _on_message(self, *_: Any) -> None:
        self.incident_deliveries += 1


def make_terminals(count: int, selftest: dict[str, Any]) -> list[Terminal]:
    """Registered an hour ago, each with its healthy self-check (the real agent's report, with
    the terminal's TID)."""
    an_hour_ago, now = time.time() - HOUR, time.time()
    terminals = []
    for n in range(count):
        serial, tid = f"SIM{n:013d}", f"{20_000_000 + n:08d}"
        acquirer = {"host": f"10.0.0.{n % HOSTS + 1}:5000", "nii": NII}
        identity = Identity(serial, f"00009902{serial}", acquirer)
        state = state_message(status(tid, "registered"), identity, an_hour_ago, None, 0, now)
        report = json.dumps({**selftest, "tid": tid}, ensure_ascii=False)
        terminals.append(Terminal(serial, tid, acquirer, Topics(PREFIX, serial), state, report))
    return terminals


# ---------------------------------------------------------------------- the operator's side


class Observer:
    """An independent subscriber to ``pos/incidents/#``, in a thread of its own: each message
    with the time it came. Its loop is an epoll selector, not paho's: with the terminals'
    sockets open, its descriptor is above what select() takes."""

    def __init__(self, broker: str, name: str) -> None:
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self.subscribed = threading.Event()
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        read, both = selectors.EVENT_READ, selectors.EVENT_READ | selectors.EVENT_WRITE
        client = connection.new_client(name, TelemetryConfig(broker=broker), broker)
        client.on_socket_open = lambda c, u, sock: self._selector.register(sock, read)
        client.on_socket_close = lambda c, u, sock: self._selector.unregister(sock)
        client.on_socket_register_write = lambda c, u, sock: self._selector.modify(sock, both)
        client.on_socket_unregister_write = lambda c, u, sock: self._selector.modify(sock, read)
        client.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/incidents/#", qos=1)
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = lambda c, u, m: self.messages.append(
            (time.time(), m.topic, bytes(m.payload), bool(m.retain))
        )
        self.client = client
        connection.connect(client, broker, 30)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self.subscribed.wait(10):
            raise TimeoutError("the observer's subscription")

    def _run(self) -> None:
        while not self._stop.is_set():
            for _, mask in self._selector.select(0.05):
                if mask & selectors.EVENT_WRITE:
                    self.client.loop_write()
                if mask & selectors.EVENT_READ:
                    self.client.loop_read()
            self.client.loop_misc()

    def of(self, topic: str, live: bool = True) -> list[tuple[float, bytes]]:
        return [(at, payload) for at, t, payload, retained in list(self.messages)
                if t == topic and (not live or not retained)]  # fmt: skip

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.disconnect()
        self.client.loop_write()
        self._selector.close()


def retained_incidents(broker: str) -> int:
    """Incidents a subscriber that comes now finds retained."""
    later = Observer(broker, f"bench-later-{time.monotonic_ns()}")
    time.sleep(1.0)  # the retained messages come at once after the subscription
    later.close()
    return sum(1 for _, _, payload, retained in later.messages if retained and payload)


class WatcherProcess:
    """`agent fleet watch` as systemd runs it: its log in a file, its sd_notify STATUS read
    from a socket of ours (``N terminals heard, open incidents: ...``)."""

    STATUS = re.compile(r"STATUS=(\d+) terminals heard, open incidents: (.*)")

    def __init__(self, workdir: Path, broker: str, index: int) -> None:
        config = workdir / f"fleet-{index}.toml"
        config.write_text(f'[telemetry]\nbroker = "{broker}"\ntopic_prefix = "{PREFIX}"\n'
                          f"[fleet]\nincident_min_terminals = {MIN_TERMINALS}\n"
                          f"incident_window = {WINDOW}\n")  # fmt: skip
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(workdir / f"notify-{index}"))
        self.log = workdir / f"watch-{index}.log"
        self._log = open(self.log, "wb")  # noqa: SIM115 - open for the life of the process
        self.process = subprocess.Popen(
            [AGENT, "fleet", "watch", "--broker", broker, "--config", str(config)],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL,
            env={**os.environ, "NOTIFY_SOCKET": str(workdir / f"notify-{index}")},
        )  # fmt: skip
        self.heard, self.open = 0, ""

    def wait_ready(self, timeout: float) -> None:
        self.notify.settimeout(timeout)
        while b"READY=1" not in self.notify.recv(4096):
            pass
        self.notify.setblocking(False)

    def read_status(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                found = self.STATUS.search(self.notify.recv(4096).decode(errors="replace"))
                if found:
                    self.heard, self.open = int(found.group(1)), found.group(2)

    def logged(self, action: str) -> int:
        text = self.log.read_text(errors="replace")
        return text.count(f"incident on {INCIDENT_HOST} {action}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        finally:
            self._log.close()
            self.notify.close()


# Runs a command and prints its wall time and peak RSS. A process of its own: a child's
# ru_maxrss counts what it had before exec, and a child of this benchmark (forked or vforked
# from it) would start with the benchmark's hundreds of MB.
MEASURED = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
with open(sys.argv[1], "wb") as out:
    code = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.DEVNULL).returncode
elapsed = time.perf_counter() - started
maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"s": elapsed, "max_rss_kib": maxrss, "code": code}))
"""


def fleet_summary(broker: str, fleet: Fleet | None, workdir: Path) -> dict[str, Any]:
    """`agent fleet --json`: wall time (process start to exit), its peak RSS, what it saw; the
    terminals' loop goes on meanwhile (keep-alives)."""
    output = workdir / "agent-fleet.json"
    command = [sys.executable, "-c", MEASURED, str(output), AGENT, "fleet", "--broker", broker,
               "--json"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    while process.poll() is None:
        if fleet is not None:
            fleet.turn(0.01)
        else:
            time.sleep(0.01)
    measured = json.loads(process.communicate()[0])
    if measured["code"] != 0:
        raise RuntimeError(f"agent fleet exited with {measured['code']}")
    summary = json.loads(output.read_text())
    return {"s": round(measured["s"], 2), "max_rss_mb": round(measured["max_rss_kib"] / 1024, 1),
            "terminals": summary["terminals"], "incidents": len(summary["incidents"])}  # fmt: skip


# ---------------------------------------------------------------------- the phases


def broker_phase(fleet: Fleet, broker: MosquittoProcess, watchers: list[WatcherProcess],
                 terminals: list[Terminal]) -> dict[str, Any]:  # fmt: skip
    """Connect all, then each its retained state and self-check and two events."""
    count = len(terminals)
    pid = broker.process.pid
    rss_start, cpu_start = rss_mb(pid), cpu_seconds(pid)
    started = time.perf_counter()
    for terminal in terminals:
        fleet.terminals.append(terminal)
        fleet.connect(terminal)
    fleet.pump_until(lambda: fleet.connected == count, 120, "all connections")
    connected_s = time.perf_counter() - started
    fleet.pump_until(lambda: fleet.subscribed == count, 60, "the incident subscriptions")
    fleet.pump(1.0)
    rss_connected, cpu_connected = rss_mb(pid), cpu_seconds(pid)

    expected = count * (2 + len(EVENTS))
    now = time.time()
    publishing, own_cpu = time.perf_counter(), time.process_time()
    for terminal in terminals:
        fleet.publish_state(terminal)
        fleet.publish_selftest(terminal)
        for kind, code, detail in EVENTS:
            fleet.publish_event(terminal, kind, code, detail, now)
    fleet.pump_until(lambda: fleet.acknowledged >= expected, 120, "the broker's PUBACKs")
    published_s = time.perf_counter() - publishing
    own_cpu = time.process_time() - own_cpu

    def heard_all() -> bool:
        return all(w.heard >= count for w in watchers)

    fleet.pump_until(heard_all, 120, "the watchers to hear every terminal")
    watchers_s = time.perf_counter() - publishing
    fleet.pump(2.0)  # what the broker still queues for the watchers goes
    rss_published, cpu_published = rss_mb(pid), cpu_seconds(pid)
    state_bytes = len(json.dumps({**terminals[0].state, "seq": 1}, ensure_ascii=False))
    selftest_bytes = len(terminals[0].selftest.encode())
    retained = (state_bytes + len(terminals[0].topics.state)
                + selftest_bytes + len(terminals[0].topics.selftest))  # fmt: skip
    return {
        "connect_all_s": round(connected_s, 2),
        "connections_per_s": round(count / connected_s),
        "messages_acknowledged": fleet.acknowledged,
        "publish_all_s": round(published_s, 2),
        "messages_per_s": round(fleet.acknowledged / published_s),
        "simulator_cpu_share_while_publishing": round(own_cpu / published_s, 2),
        "watchers_heard_all_s": round(watchers_s, 2),
        "state_message_bytes": state_bytes,
        "selftest_message_bytes": selftest_bytes,
        "retained_bytes_per_terminal": retained,
        "mosquitto": {
            "rss_mb_before": round(rss_start, 1),
            "rss_mb_connected": round(rss_connected, 1),
            "rss_mb_published": round(rss_published, 1),
            "kib_per_1000_connections": kib_per_1000(rss_connected - rss_start, count),
            # the retained messages, and what the burst left (queues to the watchers, events)
            "kib_per_1000_terminals_published": kib_per_1000(rss_published - rss_connected, count),
            "cpu_s_connecting": round(cpu_connected - cpu_start, 2),
            # until the watchers have heard them all: each state and self-check goes to every
            # watcher, each event to one of them
            "cpu_s_publishing": round(cpu_published - cpu_connected, 2),
            "deliveries_to_watchers": count * (2 * len(watchers) + len(EVENTS)),
            "messages_in_per_cpu_s": round(expected / max(cpu_published - cpu_connected, 0.01)),
            "connections_per_cpu_s": round(count / max(cpu_connected - cpu_start, 0.01)),
        },
    }


def incident_phase(fleet: Fleet, broker: MosquittoProcess, watchers: list[WatcherProcess],
                   group: list[Terminal], spread: float) -> dict[str, Any]:  # fmt: skip
    topic = f"{PREFIX}/incidents/{INCIDENT_HOST}"
    observer = Observer(broker.url, "bench-observer")
    try:
        delivered_before, published_before = fleet.incident_deliveries, fleet.published
        connections_before = fleet.begun
        begun = time.time()
        twentieth = 0.0
        for i, terminal in enumerate(group):
            due = begun + i * spread / len(group)
            while (left := due - time.time()) > 0:
                fleet.turn(min(left, 0.02))
            now = time.time()
            fleet.publish_event(terminal, "97", "host.97", {"code": "97", "text": ""}, now)
            if i == MIN_TERMINALS - 1:
                twentieth = now
            identity = Identity(terminal.serial, terminal.state["tusn"], terminal.acquirer)
            recovering = status(terminal.tid, "recovering", "host.97", "97")
            fleet.change_state(terminal, state_message(recovering, identity, now, now, 0, now))
        burst_end = time.time()
        fleet.pump_until(lambda: bool(observer.of(topic)), 60, "the incident")
        opened_at = observer.of(topic)[0][0]
        fleet.pump_until(lambda: all(w.open == INCIDENT_HOST for w in watchers), 30,
                         "both watchers to see the incident")  # fmt: skip
        fleet.pump(3.0)  # its count grows while more are heard
        messages = observer.of(topic)
        final = json.loads(messages[-1][1])
        retained_after_burst = retained_incidents(broker.url)
        fleet.pump(0.5)

        recovered_begun = time.time()
        for terminal in group:
            now = time.time()
            detail = {"code": "97", "seconds": round(now - burst_end, 1), "remedies": ["signin"]}
            fleet.publish_event(terminal, "recovered", "recovery.recovered", detail, now)
            identity = Identity(terminal.serial, terminal.state["tusn"], terminal.acquirer)
            last_97 = terminal.state["last_97"]
            registered = state_message(status(terminal.tid, "registered"), identity, now, None,
                                       0, now)  # fmt: skip
            fleet.change_state(terminal, {**registered, "last_97": last_97})
        recovered_end = time.time()
        fleet.pump_until(lambda: any(not p for _, p in observer.of(topic)), 60, "the close")
        closed_at = next(at for at, payload in observer.of(topic) if not payload)
        fleet.pump(1.0)
        retained_after_close = retained_incidents(broker.url)
        live = observer.of(topic)
    finally:
        observer.close()
    openings = sum(w.logged("opened") for w in watchers)
    return {
        "terminals": len(group),
        "acquirer_host": INCIDENT_HOST,
        "min_terminals": MIN_TERMINALS,
        "window_s": WINDOW,
        "spread_s": round(burst_end - begun, 2),
        "twentieth_97_to_incident_s": round(opened_at - twentieth, 3),
        "first_97_to_incident_s": round(opened_at - begun, 3),
        "terminals_in_incident_after_burst": final["terminals"],
        "incident_messages": len([p for _, p in live if p]),
        "close_messages": len([p for _, p in live if not p]),
        "openings_logged_by_watchers": openings,
        "closings_logged_by_watchers": sum(w.logged("closed") for w in watchers),
        "retained_incidents_after_burst": retained_after_burst,
        "deliveries_to_terminals": fleet.incident_deliveries - delivered_before,
        # each terminal: 97, state; reconnected: state, self-check; recovered, state;
        # reconnected: state, self-check
        "messages_published": fleet.published - published_before,
        "reconnections": fleet.begun - connections_before,
        "recovery_spread_s": round(recovered_end - recovered_begun, 2),
        "last_registered_to_close_s": round(closed_at - recovered_end, 3),
        "first_registered_to_close_s": round(closed_at - recovered_begun, 3),
        "retained_incidents_after_close": retained_after_close,
    }


# What telemetry adds to the agent, part by part, in an interpreter of its own that has first
# imported every module the agent without telemetry had imported (its -X importtime list):
# paho's modules (with platform, which paho imports), the "idna" codec (getaddrinfo encodes a
# host name with it: paho calls getaddrinfo, and asyncio skips it for the numeric acquirer
# address of these runs), then a client connected with its will, its retained state and
# self-check published, in a thread's loop as the publisher runs it.
PARTS = """
import gc, importlib, json, sys, threading, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
broker, parts = sys.argv[1], {}
for name in open(sys.argv[2]).read().split():
    try:
        importlib.import_module(name)
    except Exception:
        pass
def step(name):
    global last
    gc.collect()
    now = rss()
    parts[name] = now - last
    last = now
gc.collect()
last = rss()
import agent.telemetry.publisher
step("paho_imports_kib")
"pos.example".encode("idna")
step("idna_codec_kib")
from agent.config import TelemetryConfig
from agent.telemetry import mqtt
client = mqtt.new_client("pos-agent-SIM1", TelemetryConfig(broker=broker), broker)
client.will_set("bench/SIM1/state", "w" * 400, 1, True, properties=mqtt.will_properties(10))
mqtt.connect(client, broker, 60, 10)
thread = threading.Thread(target=lambda: [client.loop(1.0) for _ in range(5)], daemon=True)
thread.start()
time.sleep(0.5)
client.publish("bench/SIM1/state", "s" * 400, 1, True)
client.publish("bench/SIM1/selftest", "t" * 2000, 1, True)
time.sleep(1.0)
step("client_connection_thread_kib")
print(json.dumps(parts))
"""
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", re.MULTILINE)


def telemetry_parts(broker: str, modules: Path) -> dict[str, int]:
    """``modules``: a file of the module names the agent without telemetry imported."""
    command = [sys.executable, "-c", PARTS, broker, str(modules)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    parts = json.loads(result.stdout)
    return {**parts, "total_kib": sum(parts.values())}


def agent_cost(workdir: Path, broker: MosquittoProcess | None, purchases: int,
               selftest: bool = False) -> tuple[dict[str, Any], dict[str, Any] | None]:  # fmt: skip
    """One `agent run`: RSS idle after its sign-in and the purchases, CPU and latency over the
    purchases; ``selftest``: and its `agent selftest --json` report, and the modules it
    imported (-X importtime) in ``workdir/modules.txt`` (the first round's: in the full run
    not the round reported)."""
    folder = Path(tempfile.mkdtemp(prefix="with-" if broker else "without-", dir=workdir))
    host, module = HostProcess(folder), ModuleProcess(folder)
    config = write_config(folder, host, module)
    if broker is not None:  # its own prefix: its retained state is not one of the fleet's
        telemetry = f'\n[telemetry]\nbroker = "{broker.url}"\ntopic_prefix = "bench"\n'
        config.write_text(config.read_text() + telemetry)
    env = {"PYTHONPROFILEIMPORTTIME": "1"} if selftest else None
    agent = AgentProcess(config, folder / "agent.sock", folder / "agent.log", env)
    report = None
    try:
        agent.wait_ready()
        wait_for((folder / "control.sock").exists, 10, "the control socket")
        wait_for(lambda: control(folder / "control.sock", b'{"cmd": "status"}')["signed_in"], 15,
                 "the sign-in")  # fmt: skip
        time.sleep(2.0)  # telemetry connected and its first state sent
        pid = agent.process.pid
        client = AgentClient(folder / "agent.sock", itertools.count(1))
        cpu_before, samples = cpu_seconds(pid), []
        for _ in range(purchases):
            started = time.perf_counter()
            client.purchase()
            samples.append((time.perf_counter() - started) * 1000)
        cpu = cpu_seconds(pid) - cpu_before
        client.close()
        time.sleep(2.0)  # idle again: the state after the purchases published
        idle = rss_mb(pid)
        if selftest:
            command = [AGENT, "selftest", "--json", "--config", str(config)]
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            report = json.loads(result.stdout)
    finally:
        agent.stop()
        host.stop()
        module.stop()
    if selftest:
        imported = IMPORTED.findall((folder / "agent.log").read_text(errors="replace"))
        (workdir / "modules.txt").write_text("\n".join(imported))
    figures = {"rss_idle_mb": round(idle, 2), "cpu_s": round(cpu, 2),
               "purchase_p50_ms": round(statistics.median(samples), 2),
               "purchase_p99_ms": round(percentile(samples, 0.99), 2)}  # fmt: skip
    return figures, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--purchases", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=4.0,
                        help="seconds the incident's 97s are spread over")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="500 terminals (smoke run)")
    args = parser.parse_args()
    terminals, purchases, spread = (500, 200, 2.0) if args.quick else (
        args.terminals, args.purchases, args.spread)  # fmt: skip
    if terminals < HOSTS * MIN_TERMINALS:
        raise SystemExit(f"fleet.py: at least {HOSTS * MIN_TERMINALS} terminals")
    nofile = raise_open_files(terminals + 1024)
    compile_bytecode()
    figures: dict[str, Any] = {"terminals": terminals, "acquirer_hosts": HOSTS}
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        broker = MosquittoProcess(workdir, extra_lines=broker_lines(terminals))
        fresh = rss_mb(broker.process.pid)
        watchers: list[WatcherProcess] = []
        fleet = None
        try:
            figures["limits"] = {
                "open_files_benchmark": nofile,
                "open_files_mosquitto": open_files_limit(broker.process.pid),
                "mosquitto_conf": broker_lines(terminals),
                "mosquitto_version": mosquitto_version(),
            }
            # the agent first, on a quiet machine; alternately, twice: the first round warms
            # the disk and page caches for both
            report = None
            for _ in range(1 if args.quick else 2):
                without, found = agent_cost(workdir, None, purchases, selftest=report is None)
                report = report or found
                with_telemetry, _ = agent_cost(workdir, broker, purchases)
            if report is None or not read_selftest(json.dumps(report).encode()):
                raise RuntimeError(f"the agent's self-check is not healthy: {report}")
            parts = telemetry_parts(broker.url, workdir / "modules.txt")
            empty = fleet_summary(broker.url, None, workdir)
            watchers = [WatcherProcess(workdir, broker.url, n) for n in range(WATCHERS)]
            for watcher in watchers:
                watcher.wait_ready(30)
            watcher_rss_before = [rss_mb(w.process.pid) for w in watchers]
            fleet = Fleet(broker.url)
            for watcher in watchers:
                fleet.add(watcher.notify, watcher.read_status)
            sims = make_terminals(terminals, report)
            figures.update(broker_phase(fleet, broker, watchers, sims))
            watcher_rss = [rss_mb(w.process.pid) for w in watchers]
            group = [t for t in sims if t.acquirer["host"] == INCIDENT_HOST]
            figures["incident"] = incident_phase(fleet, broker, watchers, group, spread)
            figures["watchers"] = {
                "count": WATCHERS,
                "rss_mb_before": [round(x, 1) for x in watcher_rss_before],
                "rss_mb_after_n_terminals": [round(x, 1) for x in watcher_rss],
                "kib_per_1000_terminals": kib_per_1000(
                    (sum(watcher_rss) - sum(watcher_rss_before)) / WATCHERS, terminals
                ),
                "cpu_s": [round(cpu_seconds(w.process.pid), 2) for w in watchers],
            }
            full = fleet_summary(broker.url, fleet, workdir)
            figures.update({
                "agent_fleet_s": full["s"],
                "agent_fleet_max_rss_mb": full["max_rss_mb"],
                "terminals_seen": full["terminals"],
                "incidents_seen": full["incidents"],
                "agent_fleet_empty_s": empty["s"],
                "agent_fleet_empty_max_rss_mb": empty["max_rss_mb"],
                "agent_fleet_kib_per_1000_terminals": kib_per_1000(
                    full["max_rss_mb"] - empty["max_rss_mb"], terminals),
                "agent_fleet_ms_per_1000_terminals": round(
                    (full["s"] - empty["s"]) * 1000 / terminals * 1000),
            })  # fmt: skip
            fleet.disconnect_all()
            for watcher in watchers:
                watcher.stop()
            log = (workdir / "mosquitto" / "mosquitto.log").read_text(errors="replace")
            # the retained messages alone: Mosquitto restarted from its persistence file
            broker.stop()
            broker.start()
            time.sleep(1.0)
            restarted = rss_mb(broker.process.pid)
            figures["mosquitto"].update({
                "rss_mb_fresh": round(fresh, 1),
                "rss_mb_restarted_with_retained": round(restarted, 1),
                "kib_per_1000_retained_terminals": kib_per_1000(restarted - fresh, terminals),
                "dropped_logged": log.count("dropped"),
            })  # fmt: skip
        finally:
            for watcher in watchers:
                watcher.stop()
            broker.stop()
    figures["agent_without_telemetry"] = without
    figures["agent_with_telemetry"] = with_telemetry
    figures["telemetry_rss_mb"] = round(with_telemetry["rss_idle_mb"] - without["rss_idle_mb"], 2)
    figures["telemetry_rss_parts"] = parts
    figures["telemetry_p50_ratio"] = round(
        with_telemetry["purchase_p50_ms"] / without["purchase_p50_ms"], 2
    )
    figures["targets"] = {"telemetry_rss_mb": 1.0, "telemetry_p50_ratio": "no measurable rise"}
    print_figures("fleet", figures)


if __name__ == "__main__":
    main()
