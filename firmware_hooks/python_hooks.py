"""Hooks as Python entry points (group ``pos_agent.hooks``, name = event, value = module:function).

This module finds and calls them; what a return value or an exception means is decided by the
runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importlib.metadata pulls in email and more: only when hooks run
    from importlib import metadata

log = logging.getLogger(__name__)

GROUP = "pos_agent.hooks"


class DidNotReturn(Exception):
    """The hook was still running at its deadline."""


def find(events: Iterable[str]) -> dict[str, list[metadata.EntryPoint]]:
    """The entry points of each event, ordered by their value so that the order is stable."""
    found: dict[str, dict[str, metadata.EntryPoint]] = {event: {} for event in events}
    from importlib import metadata

    for entry_point in metadata.entry_points(group=GROUP):
        if entry_point.name not in found:
            log.warning(
                "entry point %s = %s in group %s names no hook event; ignored",
                entry_point.name, entry_point.value, GROUP,
            )  # fmt: skip
            continue
        # The same function registered twice (two installs of one package) runs once.
        found[entry_point.name].setdefault(entry_point.value, entry_point)
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


async def call(entry_point: metadata.EntryPoint, payload: dict[str, Any], timeout: float) -> Any:
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
