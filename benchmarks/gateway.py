"""What the agent adds to a purchase: the same purchases sent straight to the host simulator and
through a running agent (``agent run``), interleaved one for one in the same run, then throughput
with concurrent clients on each path.

The host simulator, the module simulator (on a pty) and the agent are each a process of their own.
The direct client is an app that does its own MAC in software; the agent computes two MACs per
purchase through the module (request, and the check of the response), so the module's serial time
is measured on the same module process beforehand and reported apart: the target (added p50 under
1 ms, p99 under 3 ms) excludes it. A PIN purchase through the agent (the PIN block from the
module's keypad through the module socket, then the purchase) is compared with a direct app that
reads the PIN block on the serial line itself. Prints one JSON object.

A pty has no baud rate: ``--line`` runs the same again with the module answering each command
after the time its bytes take on a real 115200 8N1 line (``benchmarks/module.py``), as a
terminal's module does. What the agent does while the module works is then hidden behind it.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import percentile, print_figures

from agent.journal import Journal
from agent.sim.module import TEST_TMK
from agent.wire.builders import Card, Terminal, purchase_request, signin_request
from agent.wire.frame import Header, Tpdu, decode_frame, host_frame, with_length
from agent.wire.mac import DesKey, cup_ecb_mac, encode_with_mac, mac_block
from agent.wire.message import Message, decode_message, encode_message
from agent.wire.pin import pin_pan
from agent.wire.working_keys import issue_working_keys, parse_field62
from drivers.framing import Frame, FrameParser
from drivers.module import Command, encode_pin_request
from drivers.serial_module import SerialCardModule
from tests.processes import (
    AgentProcess,
    HostProcess,
    ModuleProcess,
    control,
    write_config,
)

DIRECT = Terminal("20000002", "898100012340002")
PAN = "6217001234567890123"
CARD = Card(pan=PAN, expiry="2812", track2=PAN + "=28121010000000000")
AMOUNT = 1000  # fen; an amount ending in 51 would be declined
# A MAC's bytes on a real line, both ways (benchmarks/module.py: 19 out, 18 back) at 115200 8N1
LINE_S = (19 + 18) * 10 / 115_200


def read_frame(sock: socket.socket) -> bytes:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            data += chunk
        return data

    return exactly(int.from_bytes(exactly(2), "big"))


class DirectClient:
    """An app talking to the host itself: its own sign-in, keys and MAC."""

    tpdu, header = Tpdu(0x0003, 0x0000), Header()

    def __init__(
        self, address: str, stans: itertools.count[int], mak: DesKey | None = None
    ) -> None:
        """Signs in unless given the MAK of an earlier sign-in (each sign-in replaces the keys)."""
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stans = stans
        if mak is not None:
            self.mak = mak
            return
        response = self._exchange(signin_request(DIRECT, stan=next(stans), batch=1), b"")
        keys = parse_field62(response.binary(62), "003")
        tmk = DesKey(TEST_TMK)
        mak = keys.key("MAK").ciphertext
        self.mak = DesKey(tmk.decrypt(mak[:8]) + tmk.decrypt(mak[8:]))

    def _mac(self, block: bytes) -> bytes:
        return cup_ecb_mac(block, self.mak.encrypt)

    def _exchange(self, message: Message, encoded: bytes) -> Message:
        self.sock.sendall(host_frame(encoded or encode_message(message), self.tpdu, self.header))
        return decode_frame(read_frame(self.sock)).message

    def purchase(self) -> str:
        request = purchase_request(
            DIRECT, stan=next(self.stans), batch=1, amount_fen=AMOUNT, card=CARD
        )
        response = self._exchange(request, encode_with_mac(request, self._mac))
        encoded = encode_message(response)
        if self._mac(mac_block(encoded[:-8])) != encoded[-8:]:
            raise AssertionError("response MAC wrong")
        return response.text(39)

    def close(self) -> None:
        self.sock.close()


class AgentClient:
    """A payment app in wrap mode: the agent adds TID/MID, STAN mapping and MAC; PINs come from
    the module's keypad through the agent's module socket."""

    def __init__(self, path: Path, stans: itertools.count[int]) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.module = socket.socket(socket.AF_UNIX)
        self.module.connect(str(path.with_name("module.sock")))
        self.stans = stans

    def purchase(self, pin_block: bytes | None = None) -> str:
        fields = {
            2: CARD.pan, 3: "000000", 4: f"{AMOUNT:012d}", 11: f"{next(self.stans) % 999999:06d}",
            14: CARD.expiry, 22: "022", 25: "00", 35: CARD.track2, 49: "156", 60: "22000000",
        }  # fmt: skip
        if pin_block is not None:
            fields.update({22: "021", 26: "12", 52: pin_block, 53: "2600000000000000"})
        message = Message("0200", dict(sorted(fields.items())))
        self.sock.sendall(with_length(encode_message(message)))
        return decode_message(read_frame(self.sock)).text(39)

    def pin_block(self) -> bytes:
        request = Frame(1, Command.PIN_BLOCK, encode_pin_request(0, pin_pan(PAN), 30))
        self.module.sendall(request.encode())
        parser, events = FrameParser(), []
        while not events:
            events = parser.feed(self.module.recv(64))
        [answer] = events
        if not isinstance(answer, Frame) or answer.data[:1] != b"\x00":
            raise AssertionError(f"PIN_BLOCK answered {answer}")
        return answer.data[1:]

    def pin_purchase(self) -> str:
        return self.purchase(self.pin_block())

    def close(self) -> None:
        self.sock.close()
        self.module.close()


def timed(purchase: Callable[[], str]) -> float:
    started = time.perf_counter()
    code = purchase()
    elapsed = time.perf_counter() - started
    if code != "00":
        raise AssertionError(f"purchase answered {code}")
    return elapsed * 1000


def throughput(make_client: Callable[[], DirectClient | AgentClient], clients: int, each: int):
    workers = [make_client() for _ in range(clients)]
    errors: list[BaseException] = []

    def work(client: DirectClient | AgentClient) -> None:
        try:
            for _ in range(each):
                timed(client.purchase)
        except BaseException as exc:  # reported below: a benchmark that lost answers is void
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(client,)) for client in workers]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for client in workers:
        client.close()
    if errors:
        raise errors[0]
    return round(clients * each / elapsed, 1)


def module_ms(path: str, count: int) -> tuple[float, float]:
    """Median MAC and PIN_BLOCK round trips to the module process on its serial line, measured
    before the agent opens it (the keypad answers at once: no cardholder time is in it)."""
    with SerialCardModule(path) as module:
        clear = {"PIK": bytes(range(16)), "MAK": bytes(range(16, 32))}
        module.load_working_keys(0, 2, issue_working_keys(TEST_TMK, 2, clear).to_field62())
        block = mac_block(bytes(128))
        samples: dict[str, list[float]] = {"mac": [], "pin": []}
        for _ in range(count):
            started = time.perf_counter()
            module.mac_from_block(block)
            samples["mac"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            module.pin_block(0, pin_pan(PAN), 30)
            samples["pin"].append((time.perf_counter() - started) * 1000)
    return statistics.median(samples["mac"]), statistics.median(samples["pin"])


def journal_sync_ms(folder: Path, count: int) -> float:
    """Median time of the two durable journal steps of a purchase (pending, then completed),
    on the file system the agent's journal is on: the disk syncs that DESIGN.md section 8
    requires, which no code change can remove."""
    journal = Journal(folder / "sync-probe.sqlite3")
    request = purchase_request(DIRECT, stan=1, batch=1, amount_fen=AMOUNT, card=CARD)
    response = Message("0210", {11: "000001", 39: "00", 41: DIRECT.tid})
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        request.fields[11] = journal.take_stan()
        transaction = journal.begin(request, financial=True)
        journal.finish(transaction, "completed", response)
        samples.append((time.perf_counter() - started) * 1000)
    journal.close()
    return statistics.median(samples)


def journal_commits_ms(breakdown: dict[str, object]) -> float:
    """The p50s of the two commits of a purchase in the run (the stages after the pending and
    the outcome rows: SQLite's page writes and the disk's sync), in ms: the disk costs more in
    the purchases' cadence than back to back (a device idle for a millisecond is slower to
    sync), and this is what the agent met."""
    stages_us = breakdown["stages_us"]
    assert isinstance(stages_us, dict)
    return round(
        sum(stages_us[name]["p50"] for name in ("pending-synced", "outcome-synced")) / 1000, 3
    )


def agent_on_cpu_ms(breakdown: dict[str, object]) -> float:
    """The p50 of the agent's own CPU time on a request's path, in ms (agent.stages)."""
    on_cpu = breakdown["on_cpu_us"]
    assert isinstance(on_cpu, dict)
    return round(on_cpu["p50"] / 1000, 3)


def stage_times(workdir: Path) -> dict[str, object]:
    """The agent's stage breakdown since the last ask (POS_AGENT_STAGES=1)."""
    return control(workdir / "control.sock", b'{"cmd": "stages"}')


CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")  # where a cgroup v1 cpu controller is mounted
CGROUP_V2 = Path("/sys/fs/cgroup")


def limit_cpu(pid: int, percent: int) -> Path:
    """Put process ``pid`` in a cgroup of its own limited to ``percent`` % of one core (a
    terminal-class CPU, as `systemd-run --scope -p CPUQuota=` would where systemd runs);
    returns the cgroup (removed once the process is gone)."""
    period = 100_000  # microseconds
    quota = period * percent // 100
    if (CGROUP_V2 / "cgroup.controllers").exists() and "cpu" in (
        CGROUP_V2 / "cgroup.controllers"
    ).read_text().split():
        group = CGROUP_V2 / f"pos-agent-bench-{pid}"
        group.mkdir(exist_ok=True)
        (group / "cpu.max").write_text(f"{quota} {period}")
        (group / "cgroup.procs").write_text(str(pid))
        return group
    group = CGROUP_V1_CPU / f"pos-agent-bench-{pid}"
    group.mkdir(exist_ok=True)
    (group / "cpu.cfs_period_us").write_text(str(period))
    (group / "cpu.cfs_quota_us").write_text(str(quota))
    (group / "cgroup.procs").write_text(str(pid))  # all its threads, and those it starts
    return group


# What keeps a CPU from going idle without taking any time from real work: SCHED_IDLE runs only
# when nothing else on that CPU can. It ends with the benchmark, even one killed (it then has
# another parent).
SPINNER = (
    "import os, sys\n"
    "os.sched_setaffinity(0, {int(sys.argv[1])})\n"
    "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
    "parent = os.getppid()\n"
    "while os.getppid() == parent:\n"
    "    pass\n"
)


@contextlib.contextmanager
def cpus_kept_awake() -> Iterator[None]:
    """Every CPU kept from idling by a spinner of the lowest priority: what a machine whose idle
    CPUs poll instead of halting gives (a KVM guest with halt-polling, a terminal's shallow idle
    state). A VM's vCPU that halts leaves its core to the hypervisor, and the work that wakes it
    comes back to cold caches on what may be another core: the difference between the two runs
    is that cost, not the agent's."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPINNER, str(cpu)])
        for cpu in sorted(os.sched_getaffinity(0))
    ]
    try:
        time.sleep(0.2)  # started and spinning
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def measure(
    count: int, clients: int, cpu_percent: int = 0, line_s: float = 0.0
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        host = HostProcess(workdir)
        module = ModuleProcess(workdir, ["--delay", str(line_s)] if line_s else None)
        agent = None
        limited: Path | None = None
        try:
            host.post("/terminals", {"tid": DIRECT.tid, "mid": DIRECT.mid})
            mac_ms, pin_ms = module_ms(module.path, 200)
            sync_ms = journal_sync_ms(workdir, 200)
            config = write_config(workdir, host, module, idle_echo=0)
            # a PIN entry per purchase at machine speed: what the limit is there to refuse; and
            # the agent's own timestamps of each stage of a request (agent.stages)
            env = {"POS_AGENT_MODULE_PIN_PER_MINUTE": "100000", "POS_AGENT_STAGES": "1"}
            agent = AgentProcess(config, workdir / "agent.sock", workdir / "agent.log", env)
            agent.wait_ready()
            if cpu_percent:
                limited = limit_cpu(agent.process.pid, cpu_percent)
            stans = itertools.count(1)
            direct = DirectClient(host.listen, stans)
            through = AgentClient(workdir / "agent.sock", itertools.count(1))
            for _ in range(20):  # warm-up: connections, sign-in, caches
                timed(direct.purchase)
                timed(through.purchase)
            stage_times(workdir)  # the warm-up's marks are dropped
            direct_ms, agent_ms, pin_agent_ms = [], [], []
            for _ in range(count):
                direct_ms.append(timed(direct.purchase))
                agent_ms.append(timed(through.purchase))
                pin_agent_ms.append(timed(through.pin_purchase))
            breakdown = stage_times(workdir)
            direct.close()
            through.close()
            each = max(count // clients, 10)
            tps_direct = throughput(
                lambda: DirectClient(host.listen, stans, direct.mak), clients, each
            )
            tps_agent = throughput(
                lambda: AgentClient(workdir / "agent.sock", itertools.count(1)), clients, each
            )
        finally:
            if agent is not None:
                agent.stop()
            if limited is not None:
                with contextlib.suppress(OSError):  # empty now: the agent is gone
                    limited.rmdir()
            host.stop()
            module.stop()

    def figures(samples: list[float]) -> dict[str, float]:
        return {
            "p50": round(statistics.median(samples), 3),
            "p99": round(percentile(samples, 0.99), 3),
        }

    direct_f, agent_f, pin_f = figures(direct_ms), figures(agent_ms), figures(pin_agent_ms)
    serial_ms = 2 * mac_ms
    added = {key: round(agent_f[key] - direct_f[key], 3) for key in ("p50", "p99")}
    commits_ms = journal_commits_ms(breakdown)
    # a direct app reads the PIN block on its own serial line: the same PIN_BLOCK round trip
    pin_added = {key: round(pin_f[key] - direct_f[key] - pin_ms, 3) for key in ("p50", "p99")}
    return {
        "purchases_per_path": count,
        "direct_ms": direct_f,
        "through_agent_ms": agent_f,
        "ratio_p50": round(agent_f["p50"] / direct_f["p50"], 2),
        "ratio_p99": round(agent_f["p99"] / direct_f["p99"], 2),
        "module_serial_ms_per_purchase": round(serial_ms, 3),  # two MAC round trips
        "added_ms": added,
        "added_ms_excluding_module": {
            key: round(value - serial_ms, 3) for key, value in added.items()
        },
        # The request's MAC runs while the journal syncs the pending row: only the answer's MAC
        # check is on the purchase's path, and taking both round trips away also takes away up
        # to one round trip of that sync. Taking away only the one on the path does not.
        "added_ms_excluding_the_module_round_trip_on_the_path": {
            key: round(value - mac_ms, 3) for key, value in added.items()
        },
        "journal_sync_ms_per_purchase": round(sync_ms, 3),
        "journal_commits_in_the_run_ms": commits_ms,
        "added_ms_excluding_module_and_journal_commits": round(
            added["p50"] - serial_ms - commits_ms, 3
        ),
        "pin_purchase_through_agent_ms": pin_f,
        "module_pin_block_ms": round(pin_ms, 3),  # on the serial line, no cardholder time
        "pin_purchase_added_ms": pin_added,
        "pin_purchase_added_ms_excluding_module": {
            key: round(value - serial_ms, 3) for key, value in pin_added.items()
        },
        "targets_ms": {"added_p50": 1.0, "added_p99": 3.0},
        # inside the agent, for each app request of the interleaved run (plain and PIN
        # purchases): microseconds from the mark before, and of them on a CPU (cpu_us: the
        # rest waited for a device, a sync, a CPU or the GIL); host-answered holds the host's
        "stages": breakdown,
        # the agent's own work on a purchase's path, p50 (the hand-offs between its threads
        # not counted): what a slower CPU multiplies
        "agent_on_cpu_ms": agent_on_cpu_ms(breakdown),
        "agent_cpu_limit": str(limited) if limited else None,
        "concurrent_clients": clients,
        "tps_direct": tps_direct,
        "tps_through_agent": tps_agent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer purchases (smoke run)")
    parser.add_argument("--count", type=int, default=2000, help="purchases per path")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for TPS")
    parser.add_argument(
        "--cpu-quota",
        type=int,
        default=0,
        metavar="PERCENT",
        help="also run with the agent limited to PERCENT %% of one core (needs root)",
    )
    parser.add_argument(
        "--awake",
        action="store_true",
        help="also run with every CPU kept from idling (a lowest-priority spinner on each): "
        "what waking an idle vCPU costs, apart from the agent",
    )
    parser.add_argument(
        "--line",
        action="store_true",
        help="also run with the module answering in a 115200 line's time, as a terminal's does",
    )
    args = parser.parse_args()
    count = 100 if args.quick else args.count
    figures = measure(count, args.clients)
    if args.awake:
        with cpus_kept_awake():
            figures["cpus_kept_awake"] = measure(count, args.clients)
    if args.line:
        figures["module_on_a_115200_line"] = {
            "line_ms_per_command": round(LINE_S * 1000, 2),
            **measure(count, args.clients, line_s=LINE_S),
        }
    if args.cpu_quota:
        figures["at_cpu_quota"] = {
            "percent_of_one_core": args.cpu_quota,
            **measure(count, args.clients, args.cpu_quota),
        }
    print_figures("gateway", figures)


if __name__ == "__main__":
    main()
