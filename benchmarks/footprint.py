"""What the agent costs a 256 MB terminal: resident memory idle and after many purchases (and
whether it grows), the time ``agent --help`` takes, the time from start to READY=1, wake-ups per
second when idle, and the installed size.

The daemon runs as ``agent run`` with a stand-in for systemd's NOTIFY_SOCKET (a datagram socket
here), against the host and module simulators as processes of their own, from compiled bytecode as
a terminal's install has it. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import print_figures

from benchmarks.gateway import AgentClient
from tests.processes import AGENT, AgentProcess, HostProcess, ModuleProcess, write_config

TARGETS = {
    "rss_idle_mb": 28,
    "help_ms": 150,
    "ready_ms": 150,
    "idle_wakeups_per_s": 1,
    "installed_total_mib": 5,
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def pss_mb(pid: int) -> float:
    """Proportional set size: shared libraries (libpython, libcrypto) counted by their share."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no Pss")


def context_switches(pid: int) -> int:
    """Every switch of every thread: each is a wake-up of the process."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def help_ms(runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([AGENT, "--help"], capture_output=True, check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def installed_kib() -> dict[str, float]:
    """The files of pos-agent and of everything it requires, as installed: a terminal's install
    (extras such as "sim", the simulators' cryptography, are not followed)."""
    seen: dict[str, int] = {}
    pending = ["pos-agent"]
    while pending:
        name = pending.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        size = 0
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                size += path.stat().st_size
        seen[key] = size
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            pending.append(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))
    return {name: round(size / 1024, 1) for name, size in sorted(seen.items())}


def compile_bytecode() -> None:
    """Compile the agent's packages, as pip and the .deb do at install time. Without it (an
    editable checkout under PYTHONDONTWRITEBYTECODE, as on these machines) every start compiles
    the sources again, and the figures would include the compiler's memory and time."""
    import agent
    import drivers
    import firmware_hooks

    for package in (agent, drivers, firmware_hooks):
        compileall.compile_dir(Path(package.__file__).parent, quiet=1)


def measure(purchases: int, idle_seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        host, module = HostProcess(workdir), ModuleProcess(workdir)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(workdir / "notify"))
        notify.settimeout(10)
        agent = None
        try:
            config = write_config(workdir, host, module)  # idle echo every 60 s, as shipped
            started = time.perf_counter()
            agent = AgentProcess(
                config, workdir / "agent.sock", workdir / "agent.log",
                env={"NOTIFY_SOCKET": str(workdir / "notify")},
            )  # fmt: skip
            while not notify.recv(4096).startswith(b"READY=1"):
                pass
            ready_ms = (time.perf_counter() - started) * 1000
            pid = agent.process.pid
            time.sleep(1.0)  # the sign-in at start
            idle_rss, idle_pss = rss_mb(pid), pss_mb(pid)
            before = context_switches(pid)
            time.sleep(idle_seconds)
            wakeups = (context_switches(pid) - before) / idle_seconds
            client = AgentClient(workdir / "agent.sock", itertools.count(1))
            half = purchases // 2
            for _ in range(half):
                client.purchase()
            rss_half = rss_mb(pid)
            for _ in range(purchases - half):
                client.purchase()
            client.close()
            rss_after = rss_mb(pid)
        finally:
            if agent is not None:
                agent.stop()
            host.stop()
            module.stop()
            notify.close()
    return {
        "rss_idle_mb": round(idle_rss, 1),
        "pss_idle_mb": round(idle_pss, 1),
        f"rss_after_{purchases // 2}_purchases_mb": round(rss_half, 1),
        f"rss_after_{purchases}_purchases_mb": round(rss_after, 1),
        "rss_growth_second_half_mb": round(rss_after - rss_half, 2),
        "ready_ms": round(ready_ms, 1),
        "idle_wakeups_per_s": round(wakeups, 2),
        "idle_seconds_observed": idle_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer purchases (smoke run)")
    parser.add_argument("--purchases", type=int, default=10_000)
    args = parser.parse_args()
    purchases = 400 if args.quick else args.purchases
    compile_bytecode()
    figures = measure(purchases, idle_seconds=3.0 if args.quick else 10.0)
    sizes = installed_kib()
    print_figures(
        "footprint",
        {
            **figures,
            "help_ms": round(help_ms(3 if args.quick else 10), 1),
            "installed_kib": sizes,
            "installed_total_mib": round(sum(sizes.values()) / 1024, 1),
            "targets": TARGETS,
        },
    )


if __name__ == "__main__":
    main()
