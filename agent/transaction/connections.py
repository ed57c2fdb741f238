"""The client connections of one of the agent's local servers (payment, module, control socket),
so that a shutdown can close them: idle ones at once, busy ones after their answer. On Python
3.12+ ``asyncio.Server.wait_closed`` waits for every client connection, so an app that keeps its
socket open would otherwise hold the service's stop until systemd kills it."""

from __future__ import annotations

import asyncio
import contextlib
import time

CLOSE_TIMEOUT = 2.0
# A connection counts as idle (and may make room for a new one) once it has been quiet this
# long: a client that has just connected sends its request within it, and once that request is
# read the connection is busy, never evicted.
IDLE_GRACE = 0.05


class Connections:
    def __init__(self) -> None:
        self._open: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._since: dict[asyncio.Task[None], float] = {}  # when each was last active
        self.busy: set[asyncio.Task[None]] = set()  # a request being answered
        self.closing = False
        self.evicted = 0
        self._freed = asyncio.Event()

    def add(self, writer: asyncio.StreamWriter) -> asyncio.Task[None]:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        self._since[task] = time.monotonic()
        return task

    @property
    def count(self) -> int:
        return len(self._open)

    def active(self, task: asyncio.Task[None]) -> None:
        self._since[task] = time.monotonic()

    def remove(self, task: asyncio.Task[None]) -> None:
        self._open.pop(task, None)
        self._since.pop(task, None)
        self.busy.discard(task)
        self._freed.set()

    async def room(self, limit: int, timeout: float) -> bool:
        """Until fewer than ``limit`` connections are open: the one idle the longest (quiet for
        ``IDLE_GRACE`` at least, and never one being answered) is closed to make room, else a
        connection that ends frees it. False after ``timeout`` seconds without room."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.count >= limit:
            if self.evict_idle():
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, IDLE_GRACE)):
                    await self._freed.wait()
        return True

    def evict_idle(self) -> bool:
        """Close the connection idle the longest, if one has been quiet for ``IDLE_GRACE``."""
        quiet_since = time.monotonic() - IDLE_GRACE
        idle = [
            task
            for task in self._open
            if task not in self.busy and self._since.get(task, 0.0) <= quiet_since
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda task: self._since.get(task, 0.0))
        self._open.pop(oldest).close()
        self._since.pop(oldest, None)
        self.evicted += 1
        return True

    def close_idle(self) -> None:
        """From now on no new request; the connections not answering one close now."""
        self.closing = True
        for task, writer in list(self._open.items()):
            if task not in self.busy:
                writer.close()

    async def close(self, servers: list[asyncio.Server], timeout: float = CLOSE_TIMEOUT) -> None:
        """Close every connection and wait, within ``timeout``, for ``servers`` to be gone."""
        self.closing = True
        for server in servers:
            server.close()
        for writer in self._open.values():
            writer.close()
        for server in servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await server.wait_closed()
