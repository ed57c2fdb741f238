"""Blocking steps (the journal's disk syncs, the card module's round trips) on worker threads,
waited for with patience: the purchase path's, and the journal's own (:meth:`Journal.within`).

A step that outlasts the patience is not cancelled (a thread cannot be, and its outcome still
matters: a row recorded too late must be closed): the caller answers meanwhile and hooks what is
left onto the step's future.

:class:`Workers` hands a step to a thread through one queue and its outcome back to the event
loop in one callback. ``loop.run_in_executor`` goes through a concurrent future (with its
condition), a chained asyncio future and two more callbacks, and ``asyncio.to_thread`` under
``asyncio.timeout`` and ``asyncio.shield`` adds a task and two futures: each of those is Python
run while the other thread waits for the GIL, twice per step, two steps per purchase (issue 26).

:class:`Gate` counts what runs through it, so that others wait, with patience, until none does:
requests while a recovery runs, a sign-in while requests are in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Step(asyncio.Future[T]):
    """A step's outcome on the event loop. It also wakes the caller waiting for it with
    :func:`patiently` in the loop iteration the outcome arrives in: asyncio runs a future's
    done callbacks one iteration later, so through one the hand-off back took three iterations
    (outcome, callback, caller) instead of two (issue 26)."""

    __slots__ = ("waiter",)

    def __init__(self, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.waiter: asyncio.Future[None] | None = None

    def wake_waiter(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def cancel(self, msg: Any | None = None) -> bool:
        cancelled = super().cancel(msg)
        if cancelled:
            self.wake_waiter()
        return cancelled


_Job = tuple[asyncio.AbstractEventLoop, Step[Any], contextvars.Context, Callable[..., Any], tuple]


class Workers:
    """Up to ``threads`` threads, named ``name_N``, for blocking steps asked from an event loop.
    A thread is started when a step finds none idle (a terminal that runs one sale at a time
    keeps one)."""

    def __init__(self, threads: int, name: str) -> None:
        self._most = threads
        self._name = name
        self._steps: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []

    def run(self, function: Callable[..., T], /, *args: object) -> Step[T]:
        """``function(*args)`` on one of the threads, in a copy of the caller's context (so a
        request's stage marks follow it there), as a future of the running loop. Cancelling
        the future does not stop the step."""
        loop = asyncio.get_running_loop()
        future: Step[T] = Step(loop=loop)
        self._steps.put((loop, future, contextvars.copy_context(), function, args))
        if not self._idle.acquire(blocking=False) and len(self._threads) < self._most:
            thread = threading.Thread(
                target=self._serve, name=f"{self._name}_{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return future

    def close(self) -> None:
        """Once the steps asked before have run."""
        for _ in self._threads:
            self._steps.put(None)
        for thread in self._threads:
            thread.join()

    def _serve(self) -> None:
        while (step := self._steps.get()) is not None:
            loop, future, context, function, args = step
            del step
            try:
                settle, value = _succeed, context.run(function, *args)
            except BaseException as exc:  # the caller's, as run_in_executor would pass it on
                settle, value = _fail, exc
            # idle from now: the step its outcome lets the caller ask next needs no new thread
            self._idle.release()
            # a loop closed meanwhile has nobody left to tell
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, future, value)
            del future, value


def _succeed(future: Step[T], result: T) -> None:
    if not future.done():  # a caller may have cancelled its future: the step ran all the same
        future.set_result(result)
        future.wake_waiter()


def _fail(future: Step[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
        future.wake_waiter()


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
        direct = isinstance(step, Step) and step.waiter is None
        if direct:
            step.waiter = waiter
        else:  # a future of another kind, or a step someone else waits for already
            step.add_done_callback(wake)
        try:
            await waiter
        finally:
            timer.cancel()
            if direct:
                step.waiter = None
            else:
                step.remove_done_callback(wake)
        if not step.done():
            raise TimeoutError
    return step.result()


class Gate:
    """What runs through it, counted; :meth:`settled` waits until none does, ``patience()``
    seconds at most (read at each wait: a reload may change it)."""

    def __init__(self, patience: Callable[[], float]) -> None:
        self._patience = patience
        self._idle = asyncio.Event()
        self._idle.set()
        self.running = 0

    def enter(self) -> None:
        self.running += 1
        self._idle.clear()

    def leave(self) -> None:
        self.running -= 1
        if not self.running:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    async def settled(self) -> bool:
        """Whether none runs any more, waiting at most ``patience()`` seconds for it."""
        if self._idle.is_set():
            return True
        try:
            async with asyncio.timeout(self._patience()):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
