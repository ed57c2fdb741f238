"""How fast a 97 becomes an approved retry, and how long the self-check takes.

A real agent (in this process) between a payment app on its Unix socket, the host simulator over
TCP and the module simulator on a pty. Each round the host forgets the terminal's session, a
purchase gets 97, and the agent recovers (self-check, sign-in, retry). The recovery time runs from
the refusal being journalled to the approved retry; the host round trips in it (the sign-in and the
retried purchase on the agent's link, and the network check's connect and echo inside the
self-check) are timed and subtracted. The self-check is then timed on the healthy terminal and
with the host unreachable (TEST-NET-1: no route on most machines, a black hole where a default
route sends it out; the network check's detail says which it was).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import percentile, print_figures

from agent.config import parse_endpoint
from agent.selfcheck import run_checks
from tests.integration.gateway_rig import TID, app_purchase, exchange, gateway_rig

TARGET_MS = 1500
DEAD_HOST = "192.0.2.1:5000"  # TEST-NET-1: never routed to anything


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(samples), 1),
        "p90": round(percentile(samples, 0.9), 1),
        "max": round(max(samples), 1),
    }


async def measure(rounds: int, dead_rounds: int, connect_timeout: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        async with gateway_rig(
            Path(folder), response_timeout=5.0, sections={"host": {"idle_echo": 0}}
        ) as rig:
            rig.put_tms()
            agent = rig.agent
            link_ms: list[float] = []
            request = agent.link.request

            async def timed_request(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return await request(*args, **kwargs)
                finally:
                    link_ms.append((time.perf_counter() - started) * 1000)

            agent.link.request = timed_request  # type: ignore[method-assign]
            total, excluding, self_check, trips = [], [], [], []
            for number in range(rounds):
                rig.host.forget(TID)
                mark = time.time()
                link_ms.clear()
                response = await exchange(rig.socket, app_purchase(1000, app_stan=number + 1))
                if response.text(39) != "00":
                    raise AssertionError(f"round {number}: the retry answered {response.text(39)}")
                events = agent.journal.events(mark)
                refused = next(e for e in events if e["kind"] == "recovery.refused")
                recovered = next(e for e in events if e["kind"] == "recovery.recovered")
                check = next(e for e in events if e["kind"] == "recovery.self-check")
                elapsed = (recovered["at"] - refused["at"]) * 1000
                # link_ms[0] is the refused purchase itself; then sign-in and the retry
                round_trips = sum(link_ms[1:])
                network = _network_ms(check)
                total.append(elapsed)
                trips.append(round_trips + network)
                excluding.append(elapsed - round_trips - network)
                self_check.append(check["duration_ms"])
            agent.link.request = request  # type: ignore[method-assign]

            healthy = []
            for _ in range(rounds):
                report = await run_checks(agent.remedies.check_context())
                healthy.append(report.duration_ms)
            dead_config = dataclasses.replace(
                agent.config,
                host=dataclasses.replace(
                    agent.config.host,
                    primary=parse_endpoint(DEAD_HOST),
                    backup=None,
                    connect_timeout=connect_timeout,
                ),
            )
            dead, dead_ok, dead_detail = [], True, ""
            for _ in range(dead_rounds):
                context = dataclasses.replace(agent.remedies.check_context(), config=dead_config)
                report = await run_checks(context)
                dead.append(report.duration_ms)
                network = report.get("network")
                dead_ok = dead_ok and network.status.value == "fail"
                dead_detail = network.summary.en
    return {
        "rounds": rounds,
        "recovery_ms": summary(total),
        "host_round_trips_ms": summary(trips),
        "recovery_excluding_host_round_trips_ms": summary(excluding),
        "target_ms": TARGET_MS,
        "self_check_in_recovery_ms": summary(self_check),
        "self_check_healthy_ms": summary(healthy),
        "self_check_dead_network_ms": summary(dead),
        "dead_network": {
            "host": DEAD_HOST,
            "connect_timeout_s": connect_timeout,
            "network_check_failed": dead_ok,
            "network_check_said": dead_detail,
        },
    }


def _network_ms(self_check_event: dict) -> float:
    """What the host round trips of the network check (connect, echo) added to the self-check:
    the checks run concurrently, so only the time the network check ran beyond the others."""
    durations = dict(self_check_event["check_ms"])
    network = durations.pop("network", 0)
    return float(max(network - max(durations.values(), default=0), 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    rounds = 5 if args.quick else args.rounds
    figures = asyncio.run(
        measure(
            rounds, dead_rounds=1 if args.quick else 3, connect_timeout=1.0 if args.quick else 5.0
        )
    )
    print_figures("recovery", figures)


if __name__ == "__main__":
    main()
