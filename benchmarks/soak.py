"""Soak: purchases through a running ``agent run`` for N minutes while faults are injected at a
rate, then every figure that says whether anything was lost.

Host, module and agent are processes of their own. Faults, one every ``--fault-every`` seconds,
drawn at random: the host stays silent, answers late, sends garbage or half a frame, closes the
connection, or answers with a wrong MAC; the module line gets 1% noise or a busy spell.
``--network-faults`` adds the hardening issue's three: 200 idle connections flood the payment
socket, the primary host hangs for a few seconds (takes bytes, answers nothing; the agent fails
over to the backup, the same simulator reached directly), or it stops reading and later takes in
what piled up (a request that reaches the host after its reversal, which got 25, is found by the
reversal's recheck); and the money-safety issue's: forged approvals without a MAC for the sale in
flight (another TID, another MTI), a connection that goes silent without closing (a NAT that
dropped its state), and apps that repeat a sale, or leave before its answer and come back to
repeat it. ``--clock-steps`` (root: it sets the machine's clock) steps the wall clock an hour
forward or back now and then, and back again.

At the end the faults stop, the queued reversals drain, the rechecks are done, and the host's
ledger is set against the journal and the answers the app got:

- lost: approved by the host, never reversed, and the app was not told "00";
- duplicated: the host approved the same terminal, batch and STAN twice, or holds two live
  charges of one sale;
- approved then reversed: the app was told "00" but the host holds no live charge of it.

All three must be 0. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import print_figures

from agent.config import ReversalConfig
from agent.wire.frame import with_length
from agent.wire.message import encode_message
from benchmarks.footprint import rss_mb
from tests.integration.gateway_rig import app_purchase
from tests.processes import (
    AgentProcess,
    HostProcess,
    ModuleProcess,
    control,
    pay,
    wait_for,
    write_config,
)

HOST_FAULTS = ["no-answer", "late", "garbage", "partial", "close", "wrong-mac"]
STRAY = ["stray-tid", "stray-mti"]  # a forged approval 50 ms before the real answer
MODULE_FAULTS = ["noise 0.01", "busy 2"]
HUNG = "hung-primary"  # takes bytes and drops them: the host never sees those requests
DEAF = "deaf-primary"  # stops reading, later takes in what piled up (only --network-faults)
SILENT = "silent-connection"  # the connections of now go silent for good; new ones pass
FLOOD = "idle-flood"
CLOCK = "clock-step"
FLOOD_CONNECTIONS = 200
CLOCK_STEP = 3600.0


class FrontHost:
    """The primary host: a TCP relay to the simulator that can hang (takes bytes, answers
    nothing) or go deaf (stops reading) for a while; the backup is the simulator itself, so one
    ledger holds every charge."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.mode = "normal"
        self.generation = 0  # connections of an earlier generation are silent (a NAT forgot)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listen = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                agent, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            threading.Thread(target=self._pump, args=(agent, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, agent), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        born = self.generation
        try:
            while True:
                while self.mode == "deaf":
                    time.sleep(0.05)  # bytes pile up in the kernel: the sender's writes wait
                data = source.recv(4096)
                if not data:
                    break
                if self.mode == "normal" and self.generation == born:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()

    def forget_connections(self) -> None:
        """A NAT that dropped its state: what is connected now goes silent without closing."""
        self.generation += 1

    def for_a_while(self, mode: str, seconds: float) -> None:
        self.mode = mode
        threading.Timer(seconds, setattr, (self, "mode", "normal")).start()


def idle_flood(socket_path: Path, seconds: float) -> None:
    """Connections that never send a byte, held for ``seconds``."""
    held = []
    for _ in range(FLOOD_CONNECTIONS):
        client = socket.socket(socket.AF_UNIX)
        client.setblocking(False)
        with contextlib.suppress(OSError):
            client.connect(str(socket_path))
        held.append(client)

    def release() -> None:
        for client in held:
            client.close()

    threading.Timer(seconds, release).start()


WARM_UP = 2000
DRAIN = 180.0  # seconds for the queued reversals to go once the faults stop
# The amount of the purchases outside the count (warm-up, the last one): odd, so no buyer's
# (1000 + 100 * n) is ever it
OUTSIDE = 100_001


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled(pid: int) -> dict[str, float]:
    """RSS and open files once the last client's connection has been closed on both ends."""
    time.sleep(0.5)
    return {"rss_mb": rss_mb(pid), "fds": open_fds(pid)}


def send_and_leave(socket_path: Path, amount: int, app_stan: int) -> None:
    """The app sends a purchase and is gone before its answer."""
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(socket_path))
        client.sendall(with_length(encode_message(app_purchase(amount, app_stan))))


def buyer(socket_path: Path, first_stan: int, stop: threading.Event, answers: collections.Counter,
          approved: set[int], pause: float, apps_misbehave: bool, chooser: random.Random,
          ) -> None:  # fmt: skip
    """Purchases one after another; the amount names the purchase (no amount ends in 51). An
    app that misbehaves sometimes repeats a sale it was answered, or leaves before the answer
    and comes back to repeat it: the answer to the repeat is the sale's."""
    stan = first_stan
    while not stop.is_set():
        amount = 1000 + stan * 100
        app_stan = stan % 999_999 + 1
        behaviour = chooser.random() if apps_misbehave else 1.0
        try:
            if behaviour < 0.05:
                send_and_leave(socket_path, amount, app_stan)
                answers["left"] += 1
                time.sleep(chooser.choice((0.01, 0.5)))
            code = pay(socket_path, amount, app_stan=app_stan).text(39)
            if behaviour < 0.10 and code == "00":
                again = pay(socket_path, amount, app_stan=app_stan).text(39)
                answers[f"repeat {again}"] += 1
                code = again if again == "00" else code
        except OSError:
            code = "no answer"
        answers[code] += 1
        if code == "00":
            approved.add(amount)
        stan += 4
        time.sleep(pause)


def step_clock(seconds: float) -> None:
    """The machine's wall clock ``seconds`` forward (or back), as NTP or a technician would."""
    time.clock_settime(time.CLOCK_REALTIME, time.time() + seconds)


def inject_faults(host: HostProcess, module: ModuleProcess, front: FrontHost, socket_path: Path,
                  stop: threading.Event, every: float, chooser: random.Random,
                  injected: collections.Counter, kinds: list[str]) -> None:  # fmt: skip
    while not stop.wait(every):
        fault = chooser.choice(kinds)
        injected[fault] += 1
        if fault in HOST_FAULTS:
            host.post("/faults", {"kind": fault, "delay": 3.0})
        elif fault in STRAY:
            host.post("/faults", {"kind": fault, "delay": 0.05})
        elif fault == SILENT:
            front.forget_connections()
        elif fault == CLOCK:
            step = chooser.choice((CLOCK_STEP, -CLOCK_STEP))
            step_clock(step)
            threading.Timer(every / 2, step_clock, (-step,)).start()
        elif fault in (HUNG, DEAF):
            front.for_a_while(fault.removesuffix("-primary"), 3 * every)
        elif fault == FLOOD:
            idle_flood(socket_path, every)
        else:
            module.command(fault)
            if fault.startswith("noise"):
                threading.Timer(every / 2, module.command, ("noise 0",)).start()


def keep(workdir: Path) -> Path:
    """A copy of the run's files (journal, logs) that outlives it, for a person to read."""
    import shutil

    kept = Path(tempfile.mkdtemp(prefix="soak-"))
    shutil.copytree(workdir, kept, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock"))
    return kept


def journal_reversals(path: Path) -> tuple[dict[str, int], int]:
    """Reversals by state, and how many a recheck found to reverse after a 12/25."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT state, count(*) FROM reversals GROUP BY state").fetchall()
        rechecked = db.execute(
            "SELECT count(*) FROM events WHERE kind = 'reversal-confirmed' "
            "AND json_extract(detail, '$.rechecked') AND json_extract(detail, '$.outcome') = "
            "'confirmed'"
        ).fetchone()[0]
    finally:
        db.close()
    return dict(rows), rechecked


def soak(
    seconds: float,
    fault_every: float,
    clients: int,
    seed: int,
    network_faults: bool = False,
    recheck_after: float | None = None,
    clock_steps: bool = False,
) -> dict[str, object]:
    network = [FLOOD, HUNG, DEAF, *STRAY, SILENT] if network_faults else []
    kinds = [*HOST_FAULTS, *MODULE_FAULTS, *network, *([CLOCK] if clock_steps else [])]
    chooser = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        host, module = HostProcess(workdir), ModuleProcess(workdir)
        front = FrontHost(host.listen)
        config = write_config(workdir, host, module)
        if network_faults:  # the relay is the primary, the simulator itself the backup
            text = config.read_text().replace(
                f'primary = "{host.listen}"',
                f'primary = "{front.listen}"\nbackup = "{host.listen}"',
            )
            config.write_text(text)
        if recheck_after is not None:
            config.write_text(
                config.read_text() + f"\n[reversal]\nrecheck_after = {recheck_after}\n"
            )
        agent = AgentProcess(config, workdir / "agent.sock", workdir / "agent.log")
        try:
            agent.wait_ready()
            control_path = workdir / "control.sock"
            wait_for(lambda: control_path.exists() and control(
                control_path, b'{"cmd": "status"}')["signed_in"], 15, "the sign-in")  # fmt: skip
            pid = agent.process.pid
            idle_rss = rss_mb(pid)
            # Warm up before the first sample: SQLite's page cache (2 MiB by default) and the
            # allocator's arenas fill during the first thousands of purchases, then stay.
            for _ in range(WARM_UP):
                pay(workdir / "agent.sock", OUTSIDE)
            start = settled(pid)
            answers: collections.Counter[str] = collections.Counter()
            approved: set[int] = set()
            injected: collections.Counter[str] = collections.Counter()
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=buyer,
                    args=(
                        workdir / "agent.sock",
                        i,
                        stop,
                        answers,
                        approved,
                        0.005,
                        network_faults,
                        random.Random(seed + i + 1),
                    ),
                )
                for i in range(clients)
            ]
            threads.append(threading.Thread(
                target=inject_faults,
                args=(host, module, front, workdir / "agent.sock", stop, fault_every, chooser,
                      injected, kinds),
            ))  # fmt: skip
            for thread in threads:
                thread.start()
            # the first half fills what is bounded (the replay window's 120 s of requests, the
            # threads' malloc arenas): the second half's growth is what would go on
            time.sleep(seconds / 2)
            middle = rss_mb(pid)
            time.sleep(seconds / 2)
            stop.set()
            for thread in threads:
                thread.join(30)
            host.post("/faults/clear")
            front.mode = "normal"
            module.command("noise 0")
            module.command("busy 0")
            pay(workdir / "agent.sock", OUTSIDE)  # sends what is queued first

            def drained() -> bool:
                status = control(control_path, b'{"cmd": "status"}')
                return status["reversals_queued"] == 0 and status["reversals_to_recheck"] == 0

            # a recheck that failed during the faults is postponed by up to 8 recheck periods
            # (the agent's back-off): the drain may take that long after the faults stop
            recheck = ReversalConfig().recheck_after if recheck_after is None else recheck_after
            drain = DRAIN + 8 * recheck
            try:
                wait_for(drained, drain, "the reversals to drain and their rechecks")
            except TimeoutError:
                status = control(control_path, b'{"cmd": "status"}')
                raise TimeoutError(
                    f"reversals not drained in {drain:g} s: {status['reversals_queued']} queued, "
                    f"{status['reversals_to_recheck']} to recheck; the agent's files are in "
                    f"{keep(workdir)}"
                ) from None
            end = settled(pid)
            alive = agent.process.poll() is None
            ledger = host.state()
            reversals, rechecked = journal_reversals(workdir / "journal.sqlite3")
        finally:
            agent.stop()
            host.stop()
            module.stop()

    # one sale may have several charges at the host (a repeat after its reversal is charged
    # anew): what counts is how many of them are live
    charges: dict[int, list[dict]] = collections.defaultdict(list)
    for charge in ledger["purchases"].values():
        if int(charge["amount"]) != OUTSIDE:
            charges[int(charge["amount"])].append(charge)
    live = {amount: sum(not c["reversed"] for c in found) for amount, found in charges.items()}
    lost = [a for a, n in live.items() if n and a not in approved]
    reversed_after_approval = [a for a in approved if not live.get(a)]
    twice_live = [a for a, n in live.items() if n > 1]
    return {
        "seconds": seconds,
        "seed": seed,
        "network_faults": network_faults,
        "clock_steps": clock_steps,
        "clients": clients,
        "transactions": sum(answers.values()),
        "answers": dict(sorted(answers.items())),
        "approvals": answers.get("00", 0),
        "faults_injected": dict(sorted(injected.items())),
        "host_purchases": sum(map(len, charges.values())),
        "reversals_received_by_host": ledger["reversals"],
        "reversals_confirmed": reversals.get("confirmed", 0),
        "reversals_of_nothing": reversals.get("nothing-to-reverse", 0),  # 12/25: no charge
        "reversals_still_queued": reversals.get("queued", 0),
        "reversals_confirmed_on_recheck": rechecked,
        "lost": len(lost),
        "duplicated": ledger["duplicates"] + len(twice_live),
        "approved_then_reversed": len(reversed_after_approval),
        "rss_mb": {
            "idle": round(idle_rss, 1),
            f"start_after_{WARM_UP}_purchases": round(start["rss_mb"], 1),
            "halfway": round(middle, 1),
            "end": round(end["rss_mb"], 1),
        },
        "rss_growth_mb": round(end["rss_mb"] - start["rss_mb"], 2),
        "rss_growth_second_half_mb": round(end["rss_mb"] - middle, 2),
        "fds": {"start": start["fds"], "end": end["fds"]},
        "agent_alive": alive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="20 seconds (smoke run)")
    parser.add_argument("--seconds", type=float, help="instead of --minutes")
    parser.add_argument("--fault-every", type=float, default=2.0, help="seconds between faults")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=random.randrange(10**6))
    parser.add_argument(
        "--network-faults",
        action="store_true",
        help="also an idle connection flood, a hung and a non-reading primary host",
    )
    parser.add_argument(
        "--clock-steps", action="store_true",
        help="step the machine's wall clock an hour forward or back now and then (root)",
    )  # fmt: skip
    parser.add_argument(
        "--recheck-after", type=float,
        help="reversal.recheck_after for the agent (default: the agent's own, 30 s)",
    )  # fmt: skip
    args = parser.parse_args()
    seconds = args.seconds or (20.0 if args.quick else args.minutes * 60)
    figures = soak(seconds, args.fault_every, args.clients, args.seed, args.network_faults,
                   args.recheck_after, args.clock_steps)  # fmt: skip
    print_figures("soak", figures)


if __name__ == "__main__":
    main()
