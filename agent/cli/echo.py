"""agent echo: an echo test (0820/301) to the host."""

from __future__ import annotations

import argparse
import sys

from agent.cli import render
from agent.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    ask_agent,
    load_config,
)


def cmd_echo(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from agent.host.link import HostLink, HostLinkError, LinkOptions
    from agent.journal import Journal, JournalError
    from agent.service.instance import InstanceError, InstanceLock
    from agent.wire.builders import Terminal, echo_request

    config = load_config(args)
    working = render.Progress("agent echo: waiting for the host")
    with working:
        answer = ask_agent(config, {"cmd": "echo"})
    if answer is None:
        if not config.endpoints:
            raise UsageError("no host configured (host.primary)")
        from agent import paths

        async def direct() -> dict[str, object]:
            journal = Journal(paths.journal_path(config))
            link = HostLink(LinkOptions.from_config(config))
            terminal = Terminal(config.terminal.tid, config.terminal.mid)
            message = echo_request(terminal, stan=journal.next_stan(), batch=journal.batch)
            started = time.monotonic()
            try:
                exchange = await link.request(message)
                return {
                    "response_code": exchange.frame.message.text(39, "??"),
                    "ms": round((time.monotonic() - started) * 1000, 1),
                    "host": link.status.endpoint,
                }
            finally:
                await link.close()
                journal.close()

        try:
            # the journal's STAN counter is the agent's: an agent still starting (its control
            # socket not served yet) holds the lock, and the echo waits for it to answer
            with working, InstanceLock.of(config):
                answer = asyncio.run(direct())
        except (HostLinkError, JournalError, InstanceError) as exc:
            print(f"agent echo: {exc}", file=sys.stderr)
            return EXIT_FAILED
    print(f"echo {answer['host']}: {answer['response_code']} in {answer['ms']} ms")
    return EXIT_OK if answer["response_code"] == "00" else EXIT_FAILED
