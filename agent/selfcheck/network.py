"""Network: for the primary and the backup host in turn, the route, DNS, a TCP connection with its
round-trip time, the TLS handshake where configured, and an echo test (0820/301) on a connection
of its own, so the check never disturbs the agent's link."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import Endpoint
from agent.host.link import HostLink, HostLinkError, LinkOptions, tls_context
from agent.journal import PATIENCE
from agent.selfcheck.base import CheckResult, Context, Status
from agent.wire.builders import Terminal, echo_request

ID = "network"


@dataclass
class Probe:
    endpoint: Endpoint
    role: str  # "primary" or "backup"
    reachable: bool = False
    echo_code: str | None = None  # field 39 of the echo answer
    host_time: str | None = None
    facts: list[str] = field(default_factory=list)
    failure: str = ""

    @property
    def healthy(self) -> bool:
        return self.reachable and self.echo_code == "00"


def links_up() -> list[str]:
    """Interfaces other than loopback whose operational state is up."""
    names = []
    for interface in sorted(Path("/sys/class/net").glob("*")):
        try:
            state = (interface / "operstate").read_text().strip()
        except OSError:
            continue
        if interface.name != "lo" and state in ("up", "unknown"):
            names.append(interface.name)
    return names


async def _resolve(host: str, port: int) -> list[tuple]:
    """getaddrinfo in a daemon thread of its own: a resolver that hangs must not hold up the
    process's exit the way a thread of the default executor would."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[list[tuple]] = loop.create_future()

    def settle(result: list[tuple] | None, error: OSError | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or [])

    def resolve() -> None:
        try:
            outcome: tuple[list[tuple] | None, OSError | None] = (
                socket.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                None,
            )
        except OSError as exc:
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=resolve, name=f"resolve {host}", daemon=True).start()
    return await future


def _route(address: str, port: int, family: int) -> str:
    """Which local address the kernel would send from; raises OSError with no route. A UDP
    connect() sends nothing."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((address, port))
        return probe.getsockname()[0]


async def _probe(context: Context, endpoint: Endpoint, role: str, deadline: float) -> Probe:
    probe = Probe(endpoint, role)
    timeout = min(context.config.host.connect_timeout, max(deadline - time.monotonic(), 0.1))
    try:
        ipaddress.ip_address(endpoint.host)
        addresses = [(socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET, endpoint.host)]
    except ValueError:
        try:
            async with asyncio.timeout(timeout):
                infos = await _resolve(endpoint.host, endpoint.port)
        except (OSError, TimeoutError) as exc:
            probe.failure = f"DNS cannot resolve {endpoint.host}: {exc or 'timed out'}"
            return probe
        addresses = [(info[0], info[4][0]) for info in infos]
        probe.facts.append(f"DNS {endpoint.host} -> {addresses[0][1]}")
    family, address = addresses[0]
    try:
        source = _route(address, endpoint.port, family)
    except OSError as exc:
        reason = "no route" if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) else exc
        probe.failure = f"{address}: {reason}"
        return probe
    probe.facts.append(f"route via {source}")
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(address, endpoint.port)
    except TimeoutError:
        probe.failure = f"TCP {endpoint}: no answer within {timeout:.1f} s"
        return probe
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        probe.failure = f"TCP {endpoint}: {reason}"
        return probe
    probe.facts.append(f"TCP connect {(time.monotonic() - started) * 1000:.1f} ms")
    writer.close()
    tls = tls_context(context.config)
    if tls is not None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(
                    address,
                    endpoint.port,
                    ssl=tls,
                    server_hostname=context.config.host.server_name or endpoint.host,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            probe.failure = f"TLS {endpoint}: {exc or 'timed out'}"
            return probe
        probe.facts.append(f"TLS handshake {(time.monotonic() - started) * 1000:.1f} ms")
        writer.close()
    probe.reachable = True
    await _echo(context, probe, deadline)
    return probe


async def _echo(context: Context, probe: Probe, deadline: float) -> None:
    config = context.config
    remaining = max(min(config.host.response_timeout, deadline - time.monotonic()), 0.1)
    link = HostLink(LinkOptions.from_config(config, [probe.endpoint], response_timeout=remaining))
    journal = context.journal
    own = journal is not None and not journal.read_only  # a technician's look numbers nothing
    # the STAN of a look only has to differ from the last one's: random, not secrets
    stan = (
        await journal.within(PATIENCE, journal.next_stan)
        if own and journal
        else random.randint(1, 999_999)
    )
    batch = context.journal.batch if context.journal else 1
    echo = echo_request(
        Terminal(config.terminal.tid or "00000000", config.terminal.mid or " " * 15),
        stan=stan,
        batch=batch,
    )
    started = time.monotonic()
    try:
        exchange = await link.request(echo)
    except HostLinkError as exc:
        probe.failure = f"echo test unanswered: {exc}"
        return
    finally:
        await link.close()
    response = exchange.frame.message
    probe.echo_code = response.text(39, "??")
    if 12 in response and 13 in response:
        probe.host_time = response.text(13) + response.text(12)
    probe.facts.append(
        f"echo answered {probe.echo_code} in {(time.monotonic() - started) * 1000:.1f} ms"
    )


def _failure(probe: Probe) -> str:
    return probe.failure or f"echo answered {probe.echo_code}"


async def check(context: Context) -> CheckResult:
    endpoints = context.config.endpoints
    if not endpoints:
        return CheckResult.of(ID, Status.SKIP, "see the provisioning check")
    deadline = time.monotonic() + context.config.selftest.deadline - 0.2
    roles = ["primary", "backup"]
    probes = await asyncio.gather(
        *(_probe(context, e, roles[i], deadline) for i, e in enumerate(endpoints))
    )
    up = links_up()
    detail = (
        "; ".join(
            f"{p.role} {p.endpoint}: " + ", ".join(p.facts + ([p.failure] if p.failure else []))
            for p in probes
        )
        + f"; links up: {', '.join(up) or 'none'}"
    )
    data = {
        "hosts": [
            {
                "role": p.role,
                "endpoint": str(p.endpoint),
                "reachable": p.reachable,
                "echo_code": p.echo_code,
            }
            for p in probes
        ],
        "host_time": next((p.host_time for p in probes if p.host_time), None),
    }
    primary, backup = probes[0], probes[1] if len(probes) > 1 else None
    if primary.healthy and (backup is None or backup.healthy):
        return CheckResult.of(
            ID, Status.OK, detail, variant="with-backup" if backup else "", data=data
        )
    if primary.healthy:
        return CheckResult.of(
            ID,
            Status.WARN,
            detail,
            finding="backup-down",
            data=data,
            backup=str(backup.endpoint),
            failure=_failure(backup),
        )
    if backup is not None and backup.healthy:
        return CheckResult.of(
            ID,
            Status.WARN,
            detail,
            finding="primary-down",
            data=data,
            primary=str(primary.endpoint),
        )
    if any(p.reachable and p.echo_code for p in probes):
        code = next(p.echo_code for p in probes if p.echo_code)
        return CheckResult.of(ID, Status.OK, detail, finding="echo-refused", data=data, code=code)
    reason = _failure(primary)
    if not up:
        reason = f"no network link is up; {reason}"
    return CheckResult.of(
        ID,
        Status.FAIL,
        f"{detail}; {reason}" if detail else reason,
        finding="host-unreachable",
        data=data,
        error=reason,
    )
