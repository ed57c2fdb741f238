"""agent run: the service (what systemd starts)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from agent.cli.common import (
    EXIT_FAILED,
    load_config,
)

if TYPE_CHECKING:
    from agent.config import Config


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from agent.journal import JournalError
    from agent.service import daemon, logs
    from agent.service.instance import InstanceError
    from drivers.loading import DriverError

    logs.setup(args.verbose)
    # read only: a damaged provisioning file is set aside once the instance lock is held
    # (daemon.run reloads then), never by a second agent that must change nothing
    config = load_config(args)

    def reload() -> Config:
        from agent import paths, provisioning
        from agent.config import load

        fresh = load(args.config)
        return provisioning.effective(fresh, paths.provisioning_path(fresh), service=True)

    try:
        return asyncio.run(daemon.run(config, reload))
    except (JournalError, InstanceError, DriverError) as exc:  # a driver's factory failed
        print(f"agent run: {exc}", file=sys.stderr)
        return EXIT_FAILED
