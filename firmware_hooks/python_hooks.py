"""Hooks as Python entry points (group ``pos_agent.hooks``, name = event, value = module:function).

This module finds and calls them; what a return value or an exception means is decided by the
runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from firmware_hooks.declared import GROUP, may_declare

log = logging.getLogger(__name__)

# importlib.metadata reads every installed distribution and brings email, zipfile and csv along:
# about 2 MB that would stay in the service for good. It runs in a child process of the same
# interpreter, with the service's sys.path, once per runner.
FIND = """
import json, sys
from importlib import metadata
sys.path[:] = json.loads(sys.argv[1])
print(json.dumps([[e.name, e.value] for e in metadata.entry_points(group=sys.argv[2])]))
"""


class DidNotReturn(Exception):
    """The hook was still running at its deadline."""


@dataclass(frozen=True)
class EntryPoint:
    """A hook as its distribution declares it: ``name`` the event, ``value`` ``module:attr``."""

    name: str
    value: str

    def load(self) -> Any:
        """The object ``value`` names, as importlib.metadata's EntryPoint.load finds it."""
        module, _, attribute = self.value.split("[")[0].partition(":")
        target: Any = importlib.import_module(module.strip())
        for part in filter(None, attribute.strip().split(".")):
            target = getattr(target, part)
        return target


def _declared() -> list[tuple[str, str]]:
    if not may_declare(sys.path):
        return []
    try:
        found = subprocess.run(
            [sys.executable, "-I", "-c", FIND, json.dumps(sys.path), GROUP],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return [(name, value) for name, value in json.loads(found.stdout)]
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("cannot list the entry points of group %s, so none runs: %s", GROUP, exc)
        return []


def find(events: Iterable[str]) -> dict[str, list[EntryPoint]]:
    """The entry points of each event, ordered by their value so that the order is stable."""
    found: dict[str, dict[str, EntryPoint]] = {event: {} for event in events}
    for name, value in _declared():
        if name not in found:
            log.warning(
                "entry point %s = %s in group %s names no hook event; ignored", name, value, GROUP
            )
            continue
        # The same function registered twice (two installs of one package) runs once.
        found[name].setdefault(value, EntryPoint(name, value))
    return {event: [found[event][value] for value in sorted(found[event])] for event in found}


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Call ``function`` in a thread of its own.

    Not asyncio.to_thread: a hung hook cannot be stopped, and in the shared executor it would hold
    a worker that the agent needs for its own blocking calls (the card module) for good. A daemon
    thread also does not hold up the agent's exit.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # the runner stopped waiting at the deadline
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def target() -> None:
        try:
            outcome = (function(*args), None)
        except BaseException as error:  # handed over to the event loop, which reports it
            outcome = (None, error)
        with contextlib.suppress(RuntimeError):  # the loop closed while the hook was hung
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, name="pos-agent hook", daemon=True).start()
    return await future


def _is_async(function: Callable[..., Any]) -> bool:
    # The second test finds an object whose class has an ``async def __call__``.
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        type(function).__call__
    )


async def call(entry_point: EntryPoint, payload: dict[str, Any], timeout: float) -> Any:
    """Load and call the hook; returns what it returned, raises what it raised, or DidNotReturn.

    The deadline covers the import too: a module that hangs at import is a hung hook.
    """
    try:
        async with asyncio.timeout(timeout) as deadline:
            function = await _in_thread(entry_point.load)
            if _is_async(function):
                return await function(payload)
            return await _in_thread(function, payload)
    except TimeoutError:
        if deadline.expired():
            raise DidNotReturn from None
        raise  # the hook's own TimeoutError, e.g. from a socket
