"""The link to the acquirer host: one TCP (optionally TLS) connection, primary then backup.

Requests are multiplexed on the connection and matched to responses by (response MTI, STAN, TID).
A response that arrives after its request gave up is logged and dropped. When no endpoint can be
reached, new connection attempts wait out an exponential back-off so a dead host costs the
merchant one connect timeout, not one per transaction. An idle connection is kept alive with
echo tests (0820/301).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.config import Config, Endpoint
from agent.wire.builders import response_mti
from agent.wire.errors import DecodeError
from agent.wire.frame import Frame, Header, Layout, Tpdu, decode_frame, host_frame
from agent.wire.message import Message, encode_message
from agent.wire.profile import CUP, Profile

log = logging.getLogger(__name__)

MAX_FRAME = 8192
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0


class HostLinkError(Exception):
    """The request may have reached the host but no usable response came back."""


class HostTimeout(HostLinkError):
    """No response within the response timeout."""


class HostUnavailable(HostLinkError):
    """No endpoint could be connected: the request never left the terminal."""


MatchKey = tuple[str, str, str]


def match_key(message: Message) -> MatchKey:
    """(MTI, STAN, TID) of a response, or of the response a request expects."""
    mti = message.mti
    if mti[2] in "024":
        mti = response_mti(mti)
    return mti, message.text(11, ""), message.text(41, "").strip()


@dataclass(frozen=True)
class Exchange:
    """A response: decoded, and as received (TPDU + header + message, no length)."""

    frame: Frame
    raw: bytes


@dataclass
class LinkStatus:
    endpoint: str | None
    connected: bool
    last_error: str
    late_responses: int


def tls_context(config: Config) -> ssl.SSLContext | None:
    """TLS with the configured CA as the only one trusted (pinned), or the system's if none."""
    if not config.host.tls:
        return None
    return ssl.create_default_context(cafile=config.host.ca_file or None)


class HostLink:
    @classmethod
    def from_config(
        cls,
        config: Config,
        endpoints: list[Endpoint] | None = None,
        *,
        response_timeout: float | None = None,
        make_echo: Callable[[], Message] | None = None,
    ) -> HostLink:
        """The link the configuration describes; the self-check narrows it to one endpoint."""
        wire = config.wire
        return cls(
            endpoints if endpoints is not None else config.endpoints,
            tpdu=Tpdu(wire.tpdu_destination, wire.tpdu_source),
            header=Header(
                category=wire.header_category,
                software_version=wire.software_version,
                sub_version=bytes.fromhex(wire.sub_version),
            ),
            profile=wire.profile,
            connect_timeout=config.host.connect_timeout,
            response_timeout=response_timeout or config.host.response_timeout,
            idle_echo=config.host.idle_echo if make_echo else 0.0,
            make_echo=make_echo,
            tls=tls_context(config),
            server_name=config.host.server_name or None,
        )

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        tpdu: Tpdu,
        header: Header,
        profile: Profile = CUP,
        connect_timeout: float = 5.0,
        response_timeout: float = 30.0,
        idle_echo: float = 0.0,
        make_echo: Callable[[], Message] | None = None,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("the host link needs at least one endpoint")
        self.endpoints = endpoints
        self.tpdu, self.header, self.profile = tpdu, header, profile
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.idle_echo = idle_echo
        self.make_echo = make_echo
        self.tls = tls
        self.server_name = server_name
        self.endpoint: Endpoint | None = None
        self.last_error = ""
        self.late_responses = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._echo_task: asyncio.Task[None] | None = None
        self._pending: dict[MatchKey, asyncio.Future[Exchange]] = {}
        self._connect_lock = asyncio.Lock()
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_traffic = time.monotonic()
        # told of every response that matched a request (the agent keeps the host's time)
        self.on_response: Callable[[Message], None] | None = None

    def reconfigure(self, other: HostLink) -> None:
        """Take hosts, framing, timeouts and TLS from ``other`` (a new configuration); a
        connection to hosts no longer configured is dropped."""
        moved = (other.endpoints, other.tls is None, other.server_name) != (
            self.endpoints,
            self.tls is None,
            self.server_name,
        )
        for name in ("endpoints", "tpdu", "header", "profile", "connect_timeout",
                     "response_timeout", "tls", "server_name"):  # fmt: skip
            setattr(self, name, getattr(other, name))
        if moved:
            self._restart("the host configuration changed")

    def prefer(self, endpoint: Endpoint) -> None:
        """Fail over: ``endpoint`` first from now on, the connection moved to it."""
        self.endpoints = [endpoint, *(e for e in self.endpoints if e != endpoint)]
        if self.endpoint != endpoint:
            self._restart(f"failing over to {endpoint}")

    def _restart(self, reason: str) -> None:
        self._backoff, self._next_attempt = 0.0, 0.0
        if self._writer is not None:
            self._detach(self._writer, reason, expected=True)

    @property
    def status(self) -> LinkStatus:
        return LinkStatus(
            str(self.endpoint) if self.endpoint else None,
            self._writer is not None,
            self.last_error,
            self.late_responses,
        )

    # ------------------------------------------------------------------------ connection

    async def _connect(self) -> asyncio.StreamWriter:
        async with self._connect_lock:
            if self._writer is not None:
                return self._writer
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                raise HostUnavailable(
                    f"no host reachable ({self.last_error}); next attempt in {wait:.1f} s"
                )
            errors = []
            for endpoint in self.endpoints:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(
                            endpoint.host,
                            endpoint.port,
                            ssl=self.tls,
                            server_hostname=(self.server_name or endpoint.host)
                            if self.tls
                            else None,
                        ),
                        self.connect_timeout,
                    )
                except (OSError, TimeoutError, ssl.SSLError) as exc:
                    reason = str(exc) or type(exc).__name__
                    errors.append(f"{endpoint}: {reason}")
                    continue
                self._attach(endpoint, reader, writer, failover=bool(errors))
                return writer
            self.last_error = "; ".join(errors)
            self._backoff = min(BACKOFF_MAX, self._backoff * 2 or BACKOFF_FIRST)
            self._next_attempt = time.monotonic() + self._backoff
            log.warning("no host reachable: %s; retrying in %.1f s", self.last_error, self._backoff)
            raise HostUnavailable(f"no host reachable: {self.last_error}")

    def _attach(
        self,
        endpoint: Endpoint,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        failover: bool,
    ) -> None:
        self.endpoint, self._reader, self._writer = endpoint, reader, writer
        self._backoff, self._next_attempt, self.last_error = 0.0, 0.0, ""
        self._last_traffic = time.monotonic()
        self._reader_task = asyncio.create_task(self._read_loop(reader, writer))
        if self.idle_echo > 0 and self.make_echo is not None and self._echo_task is None:
            self._echo_task = asyncio.create_task(self._echo_loop())
        if failover:
            log.warning("primary host unreachable; connected to backup %s", endpoint)
        else:
            log.info("connected to host %s", endpoint)

    def _detach(self, writer: asyncio.StreamWriter, reason: str, *, expected: bool = False) -> None:
        """Drop the connection of ``writer``; its in-flight requests fail with ``reason``.
        ``expected`` (we are shutting down) logs it at info rather than as a warning."""
        if self._writer is not writer:
            return
        self._writer = self._reader = None
        self.last_error = reason
        writer.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(HostLinkError(reason))
        self._pending.clear()
        log.log(
            logging.INFO if expected else logging.WARNING,
            "host connection to %s closed: %s",
            self.endpoint,
            reason,
        )

    async def close(self) -> None:
        for task in (self._echo_task, self._reader_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._echo_task = self._reader_task = None
        if self._writer is not None:
            self._detach(self._writer, "link closed", expected=True)

    # -------------------------------------------------------------------------- exchange

    async def request(
        self, message: Message, encoded: bytes | None = None, timeout: float | None = None
    ) -> Exchange:
        """Send a request with our TPDU and header; wait for its response. ``encoded`` (MTI
        onwards, its MAC computed) is sent when given, else ``message`` under the link's profile.

        Raises :class:`HostUnavailable` when nothing was sent, :class:`HostTimeout` or
        :class:`HostLinkError` when the request may have reached the host."""
        if encoded is None:
            encoded = encode_message(message, self.profile)
        return await self.forward(message, host_frame(encoded, self.tpdu, self.header), timeout)

    async def forward(
        self, message: Message, frame: bytes, timeout: float | None = None
    ) -> Exchange:
        """Send a complete frame (length included) as it is; ``message`` is its decoded body."""
        key = match_key(message)
        writer = await self._connect()
        if key in self._pending:
            raise HostLinkError(f"a request with MTI/STAN/TID {key} is already in flight")
        future: asyncio.Future[Exchange] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            writer.write(frame)
            self._last_traffic = time.monotonic()
            try:
                await writer.drain()
            except (OSError, ConnectionError) as exc:
                self._detach(writer, f"send failed: {exc}")
                raise HostLinkError(f"send failed: {exc}") from None
            limit = self.response_timeout if timeout is None else timeout
            try:
                return await asyncio.wait_for(future, limit)
            except TimeoutError:
                raise HostTimeout(
                    f"no response from {self.endpoint} within {limit:.1f} s"
                ) from None
        finally:
            if self._pending.get(key) is future:
                del self._pending[key]

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                if length > MAX_FRAME:
                    self._detach(
                        writer, f"host sent a frame length of {length} bytes (at most {MAX_FRAME})"
                    )
                    return
                payload = await reader.readexactly(length)
                self._last_traffic = time.monotonic()
                try:
                    frame = decode_frame(payload, Layout.TPDU, self.profile)
                except DecodeError as exc:
                    self._detach(writer, f"host sent an undecodable frame: {exc}")
                    return
                self._deliver(Exchange(frame, payload))
        except asyncio.IncompleteReadError as exc:
            self._detach(
                writer, f"host closed the connection ({len(exc.partial)} bytes of a frame)"
            )
        except (OSError, ConnectionError) as exc:
            self._detach(writer, f"connection error: {exc}")

    def _deliver(self, exchange: Exchange) -> None:
        key = match_key(exchange.frame.message)
        future = self._pending.get(key)
        if future is None or future.done():
            self.late_responses += 1
            log.warning("dropped a late or unmatched response: MTI %s STAN %s", key[0], key[1])
            return
        future.set_result(exchange)
        if self.on_response is not None:
            self.on_response(exchange.frame.message)

    async def _echo_loop(self) -> None:
        assert self.make_echo is not None
        while True:
            idle = time.monotonic() - self._last_traffic
            await asyncio.sleep(max(self.idle_echo - idle, 0.05))
            if self._writer is None or time.monotonic() - self._last_traffic < self.idle_echo:
                continue
            echo = self.make_echo()
            try:
                response = await self.request(echo)
                log.debug("echo test answered %s", response.frame.message.text(39, "??"))
            except HostLinkError as exc:
                log.warning("echo test failed: %s", exc)
                if self._writer is not None:
                    self._detach(self._writer, f"echo test failed: {exc}")
