"""Fleet telemetry at scale (DESIGN.md section 14): a real Mosquitto, N simulated terminals'
MQTT clients publishing what pos-agent publishes, `agent fleet` summarising their retained
states, and what telemetry costs one real agent.

- broker: N clients connect with their will, each publishes its retained state and a few
  events at QoS 1; messages acknowledged per second at the broker, and the time until all N
  are connected. The clients share one thread and one select loop (as many real terminals
  would be many processes): this measures the broker and the protocol, not Python threads.
- fleet: `agent fleet --json` against the N retained states, as a technician runs it (the
  interpreter's start included).
- agent: one `agent run` between the simulators, without and then with telemetry to the same
  broker: RSS when idle, CPU time and purchase latency over the same purchases; two rounds,
  the second reported (the first warms the caches both depend on).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import percentile, print_figures

from agent import __version__
from agent.telemetry.publisher import new_client
from benchmarks.footprint import compile_bytecode, rss_mb
from benchmarks.gateway import AgentClient
from tests.processes import (
    AGENT,
    AgentProcess,
    HostProcess,
    ModuleProcess,
    MosquittoProcess,
    control,
    wait_for,
    write_config,
)

EVENTS_PER_TERMINAL = 3


def state(tid: str, now: str) -> dict[str, object]:
    return {
        "tid": tid, "mid": "898100012340001", "serial": f"SIM{tid}", "state": "registered",
        "cause": "", "since": now, "last_97": None, "reversals_queued": 0, "reversals_stuck": 0,
        "outbox_dropped": 0, "version": __version__, "at": now,
    }  # fmt: skip


def simulated_terminals(broker: MosquittoProcess, count: int) -> dict[str, float]:
    """``count`` terminals' clients in one select loop: connect, retained state, events."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    clients = []
    acknowledged = [0]  # PUBACKs received

    def acked(*_: object) -> None:
        acknowledged[0] += 1

    started = time.perf_counter()
    for n in range(count):
        tid = f"{20_000_000 + n:08d}"
        client = new_client(f"pos-agent-SIM{tid}")
        offline = {**state(tid, now), "state": "offline", "cause": "connection lost"}
        client.will_set(f"pos/{tid}/state", json.dumps(offline), 1, True)
        client.on_publish = acked
        client.connect("127.0.0.1", broker.port, keepalive=60)
        clients.append((tid, client))
    selector = selectors.DefaultSelector()
    for _, client in clients:
        selector.register(client.socket(), selectors.EVENT_READ, client)

    def turn(timeout: float) -> None:
        for _, client in clients:
            if client.want_write():
                client.loop_write()
        for key, _ in selector.select(timeout):
            key.data.loop_read()

    while not all(client.is_connected() for _, client in clients):
        turn(0.05)
    connected_s = time.perf_counter() - started
    expected = count * (1 + EVENTS_PER_TERMINAL)
    publishing = time.perf_counter()
    for tid, client in clients:
        client.publish(f"pos/{tid}/state", json.dumps(state(tid, now)), 1, True)
        for kind in ("97", "recovered", "parameters-downloaded")[:EVENTS_PER_TERMINAL]:
            event = {"id": 1, "kind": kind, "at": now, "detail": {}}
            client.publish(f"pos/{tid}/event", json.dumps(event), 1)
    deadline = time.monotonic() + 120
    while acknowledged[0] < expected and time.monotonic() < deadline:
        turn(0.05)
    published_s = time.perf_counter() - publishing
    done = acknowledged[0]
    for _, client in clients:
        client.disconnect()
    turn(0.1)
    return {
        "terminals": count,
        "connect_all_s": round(connected_s, 2),
        "messages_acknowledged": done,
        "messages_per_s": round(done / published_s),
        "state_message_bytes": len(json.dumps(state("20000000", now))),
    }


def fleet_summary_seconds(broker: MosquittoProcess, count: int) -> dict[str, object]:
    started = time.perf_counter()
    result = subprocess.run([AGENT, "fleet", "--broker", broker.url, "--json"],
                            capture_output=True, text=True, check=True, timeout=300)  # fmt: skip
    elapsed = time.perf_counter() - started
    summary = json.loads(result.stdout)
    return {"agent_fleet_s": round(elapsed, 2), "terminals_seen": summary["terminals"]}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def agent_cost(workdir: Path, broker: MosquittoProcess | None, purchases: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="with-" if broker else "without-", dir=workdir))
    host, module = HostProcess(folder), ModuleProcess(folder)
    config = write_config(folder, host, module)
    if broker is not None:
        config.write_text(config.read_text() + f'\n[telemetry]\nbroker = "{broker.url}"\n')
    agent = AgentProcess(config, folder / "agent.sock", folder / "agent.log")
    try:
        agent.wait_ready()
        wait_for((folder / "control.sock").exists, 10, "the control socket")
        wait_for(lambda: control(folder / "control.sock", b'{"cmd": "status"}')["signed_in"], 15,
                 "the sign-in")  # fmt: skip
        time.sleep(2.0)  # telemetry connected and its first state sent
        pid = agent.process.pid
        idle = rss_mb(pid)
        client = AgentClient(folder / "agent.sock", itertools.count(1))
        cpu_before, samples = cpu_seconds(pid), []
        for _ in range(purchases):
            started = time.perf_counter()
            client.purchase()
            samples.append((time.perf_counter() - started) * 1000)
        cpu = cpu_seconds(pid) - cpu_before
        client.close()
    finally:
        agent.stop()
        host.stop()
        module.stop()
    return {"rss_idle_mb": round(idle, 2), "cpu_s": round(cpu, 2),
            "purchase_p50_ms": round(statistics.median(samples), 2),
            "purchase_p99_ms": round(percentile(samples, 0.99), 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=1000)
    parser.add_argument("--purchases", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="50 terminals (smoke run)")
    args = parser.parse_args()
    terminals, purchases = (50, 200) if args.quick else (args.terminals, args.purchases)
    compile_bytecode()
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        broker = MosquittoProcess(workdir)
        try:
            figures = simulated_terminals(broker, terminals)
            figures.update(fleet_summary_seconds(broker, terminals))
            # alternately, twice: the first round warms the disk and page caches for both
            for _ in range(1 if args.quick else 2):
                without = agent_cost(workdir, None, purchases)
                with_telemetry = agent_cost(workdir, broker, purchases)
        finally:
            broker.stop()
    figures["agent_without_telemetry"] = without
    figures["agent_with_telemetry"] = with_telemetry
    figures["telemetry_rss_mb"] = round(with_telemetry["rss_idle_mb"] - without["rss_idle_mb"], 2)
    figures["telemetry_p50_ratio"] = round(
        with_telemetry["purchase_p50_ms"] / without["purchase_p50_ms"], 2
    )
    figures["targets"] = {"telemetry_rss_mb": 1.0, "telemetry_p50_ratio": "no measurable rise"}
    print_figures("fleet", figures)


if __name__ == "__main__":
    main()
