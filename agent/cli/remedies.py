"""agent signin, agent provision: a remedy, through the running agent or directly."""

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


def _with_agent(args: argparse.Namespace, command: str, direct: str) -> int:
    """Run a remedy (``signin``, ``provision``) through the running agent, or, with none
    running, with an agent assembled for the occasion; print what it did."""
    import asyncio

    from agent.journal import JournalError
    from agent.recovery.remedies import RemedyFailed
    from agent.service.assembly import Agent
    from agent.service.instance import InstanceError, InstanceLock

    config = load_config(args)
    working = render.Progress(f"agent {command}: waiting for the host")
    try:
        with working:
            answer = ask_agent(config, {"cmd": command})
    except UsageError as exc:  # the agent ran the command and it failed
        print(f"agent {command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if answer is not None:
        print(answer["result"])
        return EXIT_OK

    async def by_hand() -> str:
        with InstanceLock.of(config):  # no service runs: this agent is the only one
            agent = Agent(config)
            try:
                return await getattr(agent.remedies, direct)()
            finally:
                await agent.close()

    try:
        with working:
            outcome = asyncio.run(by_hand())
    except (RemedyFailed, JournalError, InstanceError) as exc:
        print(f"agent {command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(outcome)
    return EXIT_OK


def cmd_signin(args: argparse.Namespace) -> int:
    return _with_agent(args, "signin", "sign_in")


def cmd_provision(args: argparse.Namespace) -> int:
    return _with_agent(args, "provision", "provision_by_hand")
