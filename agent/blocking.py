"""Blocking steps (the journal's disk syncs, the card module's round trips) on a worker thread,
waited for with patience: the purchase path's, and the journal's own (:meth:`Journal.within`).

A step that outlasts the patience is not cancelled (a thread cannot be, and its outcome still
matters: a row recorded too late must be closed): the caller answers meanwhile and hooks what is
left onto the step's future. This is ``asyncio.to_thread`` under ``asyncio.timeout`` and
``asyncio.shield`` without their extra task and futures: 30 to 45 us less per step on the
2-vCPU VM of the benchmarks, twice per purchase (issue 26).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_worker(function: Callable[..., T], /, *args: object) -> asyncio.Future[T]:
    """``function(*args)`` on a thread of the loop's executor, in a copy of the caller's context
    (so a request's stage marks follow it there)."""
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(None, contextvars.copy_context().run, function, *args)


async def patiently(step: asyncio.Future[T], seconds: float) -> T:
    """``step``'s result, or :class:`TimeoutError` once ``seconds`` have passed with ``step``
    still running. ``step`` is never cancelled, not even when the caller is."""
    if not step.done():
        loop = step.get_loop()
        waiter = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = loop.call_later(seconds, wake)
        step.add_done_callback(wake)
        try:
            await waiter
        finally:
            timer.cancel()
            step.remove_done_callback(wake)
        if not step.done():
            raise TimeoutError
    return step.result()
