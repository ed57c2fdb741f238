"""The payment app's socket (DESIGN.md section 10): frames of a 2-byte big-endian length and the
message, one answer per frame, on a Unix socket (mode 0660, the service's group) and optionally
on 127.0.0.1. What a frame means is the mode's business: this module only reads and writes.

Only the service's user and group get in (:mod:`agent.transaction.peers`), at most
``gateway.max_clients`` at once; a connection idle for ``gateway.idle_timeout`` is closed, and an
answer the app does not take within the frame timeout counts as undelivered. On shutdown idle
connections close at once and busy ones after their answer, so a transaction in flight finishes
and an app that keeps its socket open holds nothing up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent import stages
from agent.host.channel import ChannelClosed, write_frame
from agent.transaction.connections import Connections
from agent.transaction.peers import Admission
from agent.transaction.stats import GatewayStats
from agent.wire.frame import with_length

log = logging.getLogger(__name__)

MAX_APP_FRAME = 4096
# Once a frame has begun, all of it must arrive within this time (a stalled or slow-loris client
# must not hold a reader forever). Between frames a connection may stay idle.
FRAME_TIMEOUT = 5.0


@dataclass(frozen=True)
class Reply:
    """The answer to one frame; ``settle`` hears whether the app got it (an approval it did not
    get is reversed), exactly once, after the write succeeded or failed."""

    frame: bytes
    settle: Callable[[bool], Awaitable[None]] | None = None


class Mode(Protocol):
    """What a frame means (wrap or pass-through mode)."""

    async def process(self, frame: bytes) -> Reply | None:
        """The answer to ``frame``; ``None`` closes the connection (pass-through mode only,
        whose frames are the host's and whose answers only the host can give)."""
        ...

    def failed(self, frame: bytes, reason: str) -> bytes | None:
        """The answer to ``frame`` when answering it failed unexpectedly (``reason``)."""
        ...


class AppSocket:
    def __init__(
        self,
        mode: Mode,
        stats: GatewayStats,
        *,
        max_clients: int = 32,
        idle_timeout: float = 300.0,
    ) -> None:
        self._mode = mode
        self.stats = stats
        self.frame_timeout = FRAME_TIMEOUT
        self.idle_timeout = idle_timeout
        self.admission = Admission("payment socket", max_clients)
        self._servers: list[asyncio.Server] = []
        self._connections = Connections()

    async def serve(self, unix_path: Path | None, tcp_port: int = 0) -> None:
        if unix_path is not None:
            unix_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                unix_path.unlink()
            # a backlog the size of the cap: asyncio accepts a whole backlog per wake-up, and a
            # flood must meet the kernel's refusal, not exhaust the descriptors first
            server = await asyncio.start_unix_server(
                self._client, path=str(unix_path), backlog=self.admission.max_clients
            )
            os.chmod(unix_path, 0o660)
            self._servers.append(server)
        if tcp_port:

            def tcp_client() -> asyncio.StreamReaderProtocol:  # asyncio.start_server's, but
                return asyncio.StreamReaderProtocol(_TcpReader(), self._client)  # _TcpReader

            loop = asyncio.get_running_loop()
            self._servers.append(
                await loop.create_server(
                    tcp_client, "127.0.0.1", tcp_port, backlog=self.admission.max_clients
                )
            )

    @property
    def busy(self) -> bool:
        """Whether a request is being answered now."""
        return bool(self._connections.busy)

    @property
    def evicted(self) -> int:
        """Idle connections closed to make room for a new one (at ``gateway.max_clients``)."""
        return self._connections.evicted

    @property
    def tcp_port(self) -> int | None:
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                if isinstance(name, tuple):
                    return name[1]
        return None

    async def close(self) -> None:
        """Stop listening; close the idle connections now, the busy ones after their answer."""
        for server in self._servers:
            server.close()
        self._connections.close_idle()

    async def drain(self, timeout: float) -> None:
        """Wait for the transactions in flight (SIGTERM), at most ``timeout`` seconds."""
        if self._connections.busy:
            await asyncio.wait(list(self._connections.busy), timeout=timeout)

    async def wait_closed(self) -> None:
        """After :meth:`close` (and :meth:`drain`): every connection closed, the servers gone."""
        await self._connections.close(self._servers)
        self._servers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = await self.admission.enter(writer, self._connections, self.frame_timeout)
        if task is None:
            return
        try:
            await self._serve_client(task, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._connections.remove(task)
            writer.close()

    async def _serve_client(
        self, task: asyncio.Task[None], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        busy = self._connections.busy
        while not self._connections.closing:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    first = await reader.readexactly(1)
            except TimeoutError:
                log.info("payment app idle for %g s; closing its connection", self.idle_timeout)
                return
            try:
                # once the first byte is here, the whole frame must follow in time
                async with asyncio.timeout(self.frame_timeout):
                    length = int.from_bytes(first + await reader.readexactly(1), "big")
                    if length > MAX_APP_FRAME:
                        log.warning("payment app sent a length of %d bytes; closing", length)
                        self.stats.bad_frames += 1
                        return
                    frame = await reader.readexactly(length)
            except TimeoutError:
                log.warning("payment app stalled mid-frame for %g s; closing", self.frame_timeout)
                self.stats.bad_frames += 1
                return
            busy.add(task)
            self._connections.active(task)
            self.stats.requests += 1
            trace = stages.begin("read")
            try:
                reply = await self._answer(frame)
                if reply is None:
                    return
                delivered = await self._deliver(reader, writer, reply.frame)
                stages.end(trace, "answered")
                if reply.settle is not None:
                    await self._settle(reply, delivered)
            finally:
                busy.discard(task)
            if not delivered:
                return
            self._connections.active(task)

    async def _answer(self, frame: bytes) -> Reply | None:
        """The one "always answer" boundary (DESIGN.md section 10): whatever fails below it
        becomes an answer with the reason and a log line, never a closed connection."""
        try:
            return await self._mode.process(frame)
        except Exception as exc:
            log.exception("answering a payment app frame failed")
            answer = self._mode.failed(frame, f"{type(exc).__name__}: {exc}")
            return None if answer is None else Reply(answer)

    @staticmethod
    async def _settle(reply: Reply, delivered: bool) -> None:
        assert reply.settle is not None
        try:
            await reply.settle(delivered)
        except Exception:
            log.exception("settling a delivered=%s answer failed", delivered)

    async def _deliver(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes
    ) -> bool:
        """Write one answer; an app that has gone (closed its end while the host answered)
        cannot receive it (the reply's ``settle`` hears so: an approval must be reversed)."""
        # EOF from the app: it closed its end, or only its sending half (a client that shuts
        # down writing after its request still reads the answer). On the Unix socket the write
        # tells them apart (it fails once the app's socket is gone); over TCP a write into a
        # closed connection may "succeed" into a reset, so EOF there is the app gone
        if writer.is_closing() or (isinstance(reader, _TcpReader) and reader.ended):
            log.warning("the payment app left before its answer could be written")
            return False
        try:
            await write_frame(writer, with_length(answer), self.frame_timeout, "the payment app")
        except ChannelClosed as exc:
            log.warning("the payment app's answer could not be written: %s", exc)
            return False
        return True


class _TcpReader(asyncio.StreamReader):
    """A TCP app's stream, which says whether the app has closed its end (``ended``) also
    while bytes it sent before are unread: ``at_eof`` says so only once they are read, and an
    app that sent its sale and one byte more, or a repetition, and left, was taken for there
    and its approval for delivered."""

    ended = False

    def feed_eof(self) -> None:
        self.ended = True
        super().feed_eof()
