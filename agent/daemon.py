"""``agent run``: the agent as a long-running process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from agent import paths
from agent.assembly import Agent
from agent.config import Config
from agent.gateway import Gateway, ReversalPending

log = logging.getLogger(__name__)

REVERSAL_PAUSE = (1.0, 60.0)  # first and longest pause between attempts to send reversals
DRAIN_TIMEOUT = 35.0


async def _send_reversals_until_done(gateway: Gateway) -> None:
    """Runs for the life of the agent: whenever reversals are queued, send them, backing off
    while the host does not confirm."""
    pause = REVERSAL_PAUSE[0]
    while True:
        await gateway.reversals_waiting.wait()
        try:
            await gateway.send_reversals()
        except ReversalPending as exc:
            log.warning("reversal not confirmed yet (%s); next attempt in %.0f s", exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, REVERSAL_PAUSE[1])
            continue
        pause = REVERSAL_PAUSE[0]
        if not gateway.journal.queued_reversals():
            gateway.reversals_waiting.clear()


async def run(config: Config) -> int:
    agent = Agent(config)
    recovered = agent.journal.recover_pending()
    if recovered:
        log.warning(
            "%d request(s) were in flight when the agent stopped: reversals queued", recovered
        )
    path = paths.payment_socket(config)
    await agent.gateway.serve(path, config.gateway.tcp_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    background = [
        asyncio.create_task(_send_reversals_until_done(agent.gateway)),
        asyncio.create_task(agent.start()),
    ]
    log.info("ready: payment socket %s, host %s", path, ", ".join(map(str, config.endpoints)))
    await stop.wait()
    log.info("stopping: waiting for transactions in flight")
    await agent.gateway.close()
    await agent.gateway.drain(DRAIN_TIMEOUT)
    for task in background:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await agent.close()
    return 0
