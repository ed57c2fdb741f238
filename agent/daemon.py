"""``agent run``: the gateway between the payment app and the host, as a long-running process;
and the :class:`Agent` that ``agent run`` and ``agent signin`` both assemble."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from agent import paths
from agent.config import Config
from agent.gateway import Gateway, ReversalPending
from agent.journal import Journal
from agent.link import HostLink, HostLinkError
from agent.signin import SignInError
from agent.wire.builders import Terminal, echo_request
from agent.wire.message import Message
from drivers.module import ModuleError
from drivers.serial_module import SerialCardModule

log = logging.getLogger(__name__)

REVERSAL_PAUSE = (1.0, 60.0)  # first and longest pause between attempts to send reversals
DRAIN_TIMEOUT = 35.0


class Agent:
    """Journal, card module, host link and gateway, built from one configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.journal = Journal(paths.journal_path(config))
        self.terminal = Terminal(config.terminal.tid, config.terminal.mid)
        self.module = SerialCardModule(config.module.url, baudrate=config.module.baudrate)
        self.link = HostLink.from_config(config, make_echo=self._echo)
        self.gateway = Gateway(config, self.journal, self.module, self.link)

    def _echo(self) -> Message:
        return echo_request(self.terminal, stan=self.journal.next_stan(), batch=self.journal.batch)

    async def close(self) -> None:
        await self.gateway.close()
        await self.link.close()
        await asyncio.to_thread(self.module.close)
        self.journal.close()


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


async def _start(gateway: Gateway) -> None:
    """Sign in, then let queued reversals go: MACed with the keys the sign-in just loaded."""
    try:
        await gateway.sign_in()
    except (SignInError, HostLinkError, ModuleError) as exc:
        log.warning("sign-in at start failed: %s", exc)
    if gateway.journal.queued_reversals():
        gateway.reversals_waiting.set()


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
        asyncio.create_task(_start(agent.gateway)),
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
