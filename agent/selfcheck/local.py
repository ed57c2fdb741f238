"""The self-check from the command line when no agent is running: it opens the journal (read-only:
it creates no file and changes nothing the service owns) and the card module itself (``agent
selftest`` asks the running agent instead, which holds the serial port)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from agent import paths
from agent.config import Config
from agent.hook_dispatch import HookDispatch
from agent.journal import Journal, JournalError
from agent.selfcheck import Report, run_checks
from agent.selfcheck.base import Context
from drivers.loading import open_module
from drivers.module import ModuleSettings


async def run_local(
    config: Config, only: list[str] | None = None, now: Callable[[], float] = time.time
) -> Report:
    journal, journal_error = None, ""
    try:
        journal = Journal(paths.journal_path(config), read_only=True)
    except JournalError as exc:
        journal_error = str(exc)
    # the configured driver, as the service's (a vendor's entry point, or the serial one)
    settings = ModuleSettings(url=config.module.url, baudrate=config.module.baudrate)
    module = open_module(config.module.driver, settings)
    hooks = HookDispatch(lambda: config, None)  # the journal is the service's: read-only
    context = Context(config, journal, journal_error, module, now=now, hooks=hooks)
    try:
        return await run_checks(context, only)
    finally:
        with contextlib.suppress(Exception):
            module.close()
        if journal is not None:
            journal.close()
