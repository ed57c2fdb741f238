"""The link to the acquirer host: one TCP (optionally TLS) connection, primary then backup.

Requests are multiplexed on the connection (:mod:`agent.host.mux`); a response nobody waits for
goes to the ``on_unmatched`` handler the link is given (by default it is logged and counted). When
no endpoint can be reached, new connection attempts wait out a back-off (:mod:`agent.backoff`,
with jitter) so a dead host costs the merchant one connect timeout, not one per transaction. An
endpoint whose process hangs (handshakes still complete, nothing answers) is marked down after
``failover_after`` response timeouts in a row and the connection moves to the next one; a down
endpoint is tried last until ``DOWN_FOR`` has passed. An idle connection is kept alive with echo
tests (0820/301).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent import stages
from agent.backoff import Backoff
from agent.config import Config, Endpoint
from agent.host.channel import Channel, ChannelClosed
from agent.host.mux import Exchange, HostLinkError, Mux, match_key, network_code
from agent.wire.errors import DecodeError
from agent.wire.frame import Frame, Header, Layout, Tpdu, decode_frame, host_frame
from agent.wire.message import Message, encode_message
from agent.wire.profile import CUP, Profile

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
DOWN_FOR = 60.0  # seconds a hung endpoint is tried only after the others
RETIRED_LINGER = 3  # response timeouts a connection left by a failover is still read

__all__ = [
    "Exchange", "HostLink", "HostLinkError", "HostTimeout", "HostUnavailable", "LinkOptions",
    "LinkStatus",
]  # fmt: skip


class HostTimeout(HostLinkError):
    """No response within the response timeout."""


class HostUnavailable(HostLinkError):
    """No endpoint could be connected: the request never left the terminal."""


@dataclass
class LinkStatus:
    """The link as ``status`` shows it: endpoint in use, connected, last error, late answers."""

    endpoint: str | None
    connected: bool
    last_error: str
    late_responses: int


def tls_context(config: Config) -> ssl.SSLContext | None:
    """TLS with the configured CA as the only one trusted (pinned), or the system's if none."""
    if not config.host.tls:
        return None
    return ssl.create_default_context(cafile=config.host.ca_file or None)


@dataclass(frozen=True)
class LinkOptions:
    """How the link reaches the host, as one frozen value: a reload or re-provisioning gives
    the link new options whole, never attributes copied one by one."""

    endpoints: tuple[Endpoint, ...]  # none: an unprovisioned terminal, which waits for its hosts
    tpdu: Tpdu
    header: Header
    profile: Profile = CUP
    connect_timeout: float = 5.0
    response_timeout: float = 30.0
    idle_echo: float = 0.0  # seconds without traffic before an echo test; 0: none
    failover_after: int = 2
    tls: ssl.SSLContext | None = None
    server_name: str | None = None

    @classmethod
    def from_config(
        cls,
        config: Config,
        endpoints: list[Endpoint] | None = None,
        *,
        response_timeout: float | None = None,
    ) -> LinkOptions:
        """The options the configuration describes; the self-check narrows them to one
        endpoint."""
        wire = config.wire
        return cls(
            tuple(endpoints if endpoints is not None else config.endpoints),
            tpdu=Tpdu(wire.tpdu_destination, wire.tpdu_source),
            header=Header(
                category=wire.header_category,
                software_version=wire.software_version,
                sub_version=bytes.fromhex(wire.sub_version),
            ),
            profile=wire.profile,
            connect_timeout=config.host.connect_timeout,
            response_timeout=response_timeout or config.host.response_timeout,
            idle_echo=config.host.idle_echo,
            failover_after=config.host.failover_after,
            tls=tls_context(config),
            server_name=config.host.server_name or None,
        )

    def reaches_the_same_hosts(self, other: LinkOptions) -> bool:
        return (self.endpoints, self.tls is None, self.server_name) == (
            other.endpoints,
            other.tls is None,
            other.server_name,
        )


class HostLink:
    def __init__(
        self,
        options: LinkOptions,
        *,
        make_echo: Callable[[], Awaitable[Message]] | None = None,
        on_response: Callable[[Frame], None] | None = None,
        on_unmatched: Callable[[Exchange, Exchange | None], None] | None = None,
        on_down: Callable[[Endpoint, str], None] | None = None,
    ) -> None:
        """``make_echo`` builds the idle echo test (none: no echo tests); ``on_response``
        hears of every response that matched a request (the agent keeps the host's time from
        them); ``on_unmatched`` gets the late and unasked-for ones, with the answer the
        request had already got, if any; ``on_down`` hears of an endpoint marked down (the
        journal keeps it)."""
        self.options = options
        self.make_echo = make_echo
        self.endpoint: Endpoint | None = None
        self.last_error = ""
        self.late_responses = 0
        self._on_response = on_response
        self.on_unmatched = on_unmatched
        self._on_down = on_down
        self._timeouts_in_a_row = 0
        self._down_until: dict[Endpoint, float] = {}
        self._channel: Channel | None = None
        self._mux = Mux(self._unmatched)
        self._reader_task: asyncio.Task[None] | None = None
        # connections left behind by a failover, still read for their late answers
        self._retired: set[asyncio.Task[None]] = set()
        self._echo_task: asyncio.Task[None] | None = None
        self._connect_lock = asyncio.Lock()
        self._backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX)
        self._next_attempt = 0.0
        self._last_traffic = time.monotonic()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.options.endpoints

    @property
    def idle_echo(self) -> float:
        return self.options.idle_echo if self.make_echo is not None else 0.0

    def reconfigure(self, options: LinkOptions) -> None:
        """Run with ``options`` from now on (a new configuration); a connection to hosts no
        longer configured is dropped."""
        moved = not options.reaches_the_same_hosts(self.options)
        self.options = options
        if moved:
            self._restart("the host configuration changed")
        elif self.idle_echo > 0 and self._echo_task is None and self._channel is not None:
            self._echo_task = asyncio.create_task(self._echo_loop())

    def prefer(self, endpoint: Endpoint) -> None:
        """Fail over: ``endpoint`` first from now on, the connection moved to it."""
        order = (endpoint, *(e for e in self.endpoints if e != endpoint))
        self.options = dataclasses.replace(self.options, endpoints=order)
        if self.endpoint != endpoint:
            self._restart(f"failing over to {endpoint}")

    def _restart(self, reason: str) -> None:
        self._backoff.succeeded()
        self._next_attempt = 0.0
        if self._channel is not None:
            self._detach(self._channel, reason, expected=True)

    @property
    def status(self) -> LinkStatus:
        return LinkStatus(
            str(self.endpoint) if self.endpoint else None,
            self._channel is not None,
            self.last_error,
            self.late_responses,
        )

    # ------------------------------------------------------------------------ connection

    async def _connect(self) -> Channel:
        async with self._connect_lock:
            if self._channel is not None:
                return self._channel
            if not self.endpoints:
                raise HostUnavailable(
                    "no host configured (host.primary): the terminal waits for provisioning"
                )
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                raise HostUnavailable(
                    f"no host reachable ({self.last_error}); next attempt in {wait:.1f} s"
                )
            errors = []
            now = time.monotonic()
            # endpoints marked down go last (stable order otherwise): tried if all else fails
            ordered = sorted(self.endpoints, key=lambda e: self._down_until.get(e, 0.0) > now)
            for endpoint in ordered:
                try:
                    # not asyncio.wait_for: on Python 3.11 it loses a cancellation (a stop)
                    # that comes as the connection opens, and hands the connection on
                    async with asyncio.timeout(self.options.connect_timeout):
                        reader, writer = await asyncio.open_connection(
                            endpoint.host,
                            endpoint.port,
                            ssl=self.options.tls,
                            server_hostname=(self.options.server_name or endpoint.host)
                            if self.options.tls
                            else None,
                        )
                except (OSError, TimeoutError, ssl.SSLError) as exc:
                    reason = str(exc) or type(exc).__name__
                    errors.append(f"{endpoint}: {reason}")
                    continue
                channel = Channel(
                    endpoint, reader, writer, write_timeout=self.options.connect_timeout
                )
                self._attach(channel, failover=endpoint != self.endpoints[0])
                return channel
            self.last_error = "; ".join(errors)
            pause = self._backoff.failed()
            self._next_attempt = time.monotonic() + pause
            log.warning("no host reachable: %s; retrying in %.1f s", self.last_error, pause)
            raise HostUnavailable(f"no host reachable: {self.last_error}")

    def _attach(self, channel: Channel, failover: bool) -> None:
        self.endpoint, self._channel = channel.endpoint, channel
        self._backoff.succeeded()
        self._next_attempt, self.last_error = 0.0, ""
        self._last_traffic = time.monotonic()
        self._reader_task = asyncio.create_task(self._read_loop(channel))
        if self.idle_echo > 0 and self.make_echo is not None and self._echo_task is None:
            self._echo_task = asyncio.create_task(self._echo_loop())
        if failover:
            log.warning("primary host unusable; connected to %s", channel.endpoint)
        else:
            log.info("connected to host %s", channel.endpoint)

    def _detach(self, channel: Channel, reason: str, *, expected: bool = False) -> None:
        """Drop ``channel``; its in-flight requests fail with ``reason``. ``expected`` (we are
        shutting down or moving) logs it at info rather than as a warning."""
        if self._channel is not channel:
            return
        self._channel = None
        self.last_error = reason
        channel.close()
        self._mux.fail_all(reason)
        log.log(
            logging.INFO if expected else logging.WARNING,
            "host connection to %s closed: %s",
            channel.endpoint,
            reason,
        )

    async def close(self) -> None:
        for task in list(self._retired):
            task.cancel()
        await asyncio.gather(*self._retired, return_exceptions=True)
        for task in (self._echo_task, self._reader_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._echo_task = self._reader_task = None
        channel = self._channel
        if channel is not None:
            self._detach(channel, "link closed", expected=True)
            await channel.wait_closed()

    # -------------------------------------------------------------------------- exchange

    async def request(
        self, message: Message, encoded: bytes | None = None, timeout: float | None = None
    ) -> Exchange:
        """Send a request with our TPDU and header; wait for its response. ``encoded`` (MTI
        onwards, its MAC computed) is sent when given, else ``message`` under the link's profile.

        Raises :class:`HostUnavailable` when nothing was sent, :class:`HostTimeout` or
        :class:`HostLinkError` when the request may have reached the host."""
        if encoded is None:
            encoded = encode_message(message, self.options.profile)
        return await self.forward(
            message, host_frame(encoded, self.options.tpdu, self.options.header), timeout
        )

    async def forward(
        self, message: Message, frame: bytes, timeout: float | None = None
    ) -> Exchange:
        """Send a complete frame (length included) as it is; ``message`` is its decoded body."""
        key = match_key(message)
        channel = await self._connect()
        future = self._mux.expect(key, network_code(message))
        try:
            self._last_traffic = time.monotonic()
            try:
                await channel.send(frame)
            except ChannelClosed as exc:
                self._detach(channel, str(exc))
                raise HostLinkError(str(exc)) from None
            stages.mark("sent")
            limit = self.options.response_timeout if timeout is None else timeout
            try:
                async with asyncio.timeout(limit):  # on expiry the future is cancelled
                    exchange = await future
            except TimeoutError:
                self._timed_out(channel)
                raise HostTimeout(
                    f"no response from {channel.endpoint} within {limit:.1f} s"
                ) from None
            self._timeouts_in_a_row = 0
            stages.mark("host-answered")
            return exchange
        finally:
            self._mux.forget(key, future)

    def _timed_out(self, channel: Channel) -> None:
        """Count a response timeout; ``failover_after`` in a row end the connection: it went
        silent without closing (a NAT that dropped its state) or the host's process hangs
        while its kernel still completes handshakes. With another endpoint, this one is marked
        down and the next is used; alone, a fresh connection to it replaces the silent one."""
        if self._channel is not channel:
            return
        self._timeouts_in_a_row += 1
        if not self.options.failover_after or self._timeouts_in_a_row < self.options.failover_after:
            return
        reason = f"{self._timeouts_in_a_row} response timeouts in a row"
        self._timeouts_in_a_row = 0
        others = [e for e in self.endpoints if e != channel.endpoint]
        if others:
            self._down_until[channel.endpoint] = time.monotonic() + DOWN_FOR
            log.warning("host %s marked down for %g s: %s", channel.endpoint, DOWN_FOR, reason)
        else:
            log.warning("host connection to %s silent (%s): connecting afresh",
                        channel.endpoint, reason)  # fmt: skip
        self._retire(channel)
        if others and self._on_down is not None:
            self._on_down(channel.endpoint, reason)

    def _retire(self, channel: Channel) -> None:
        """Send nothing more on ``channel``, but go on reading it for a while: a slow host may
        still answer what it was sent (an approval that then goes to ``on_unmatched`` and is
        reversed), and those answers must not be lost with the connection. The requests on it
        keep their own timeouts."""
        self._channel = None
        self._backoff.succeeded()
        self._next_attempt = 0.0
        reader = self._reader_task
        self._reader_task = None

        async def linger() -> None:
            try:
                await asyncio.sleep(RETIRED_LINGER * self.options.response_timeout)
            finally:
                channel.close()
                if reader is not None:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader

        task = asyncio.create_task(linger())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def _read_loop(self, channel: Channel) -> None:
        while True:
            try:
                payload = await channel.receive()
            except ChannelClosed as exc:
                self._detach(channel, str(exc))
                return
            self._last_traffic = time.monotonic()
            try:
                frame = decode_frame(payload, Layout.TPDU, self.options.profile)
            except DecodeError as exc:
                self._detach(channel, f"host sent an undecodable frame: {exc}")
                return
            exchange = Exchange(frame, payload, str(channel.endpoint))
            if self._mux.deliver(exchange) and self._on_response is not None:
                self._on_response(frame)

    def _unmatched(self, exchange: Exchange, earlier: Exchange | None) -> None:
        self.late_responses += 1
        mti, stan, _ = match_key(exchange.frame.message)
        what = "a second answer" if earlier is not None else "a late or unmatched response"
        log.warning("%s: MTI %s STAN %s", what, mti, stan)
        if self.on_unmatched is not None:
            self.on_unmatched(exchange, earlier)

    async def _echo_loop(self) -> None:
        assert self.make_echo is not None
        while self.idle_echo > 0:  # a reload may turn it off
            idle = time.monotonic() - self._last_traffic
            await asyncio.sleep(max(self.idle_echo - idle, 0.05))
            if self._channel is None or time.monotonic() - self._last_traffic < self.idle_echo:
                continue
            try:
                echo = await self.make_echo()
            except Exception as exc:  # numbering it failed (a full disk): the next idle period
                log.warning("echo test not sent: %s", exc)
                await asyncio.sleep(self.idle_echo)
                continue
            try:
                response = await self.request(echo)
                log.debug("echo test answered %s", response.frame.message.text(39, "??"))
            except HostLinkError as exc:
                log.warning("echo test failed: %s", exc)
                if self._channel is not None:
                    self._detach(self._channel, f"echo test failed: {exc}")
        self._echo_task = None
