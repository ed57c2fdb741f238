"""Requests in flight on a host connection, matched to their responses by (response MTI, STAN,
TID). A network-management answer without a STAN (a download step's 0810 or 0830 from a host that
echoes only the fields DESIGN.md section 16 lists: 41, 42, 60) goes to the one request of its MTI,
TID and network management code (60.3) in flight, if only one is; never to a sign-in, whose keys
must be its own answer's. A response nobody waits for (late, or never asked for) goes to
the handler the link was given, with the response the request got, if it got one (a second
answer to one request)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.wire.builders import response_mti
from agent.wire.frame import Frame
from agent.wire.message import Message
from agent.wire.working_keys import SCHEMES

MatchKey = tuple[str, str, str]


class HostLinkError(Exception):
    """The request may have reached the host but no usable response came back."""


@dataclass(frozen=True)
class Exchange:
    """A response: decoded, and as received (TPDU + header + message, no length), and the
    endpoint (HOST:PORT) it came from."""

    frame: Frame
    raw: bytes = field(repr=False)  # card data inside: never printed
    endpoint: str = ""


def match_key(message: Message) -> MatchKey:
    """(MTI, STAN, TID) of a response, or of the response a request expects."""
    mti = message.mti
    if mti[2] in "024":
        mti = response_mti(mti)
    return mti, message.text(11, ""), message.text(41, "").strip()


class Mux:
    def __init__(self, on_unmatched: Callable[[Exchange, Exchange | None], None]) -> None:
        self._pending: dict[MatchKey, asyncio.Future[Exchange]] = {}
        self._network_codes: dict[MatchKey, str] = {}  # 60.3 of each request in flight
        self._on_unmatched = on_unmatched

    def expect(self, key: MatchKey, network_code: str = "") -> asyncio.Future[Exchange]:
        """A future for the response to the request with ``key`` (and ``network_code``, its
        60.3), about to be sent."""
        if key in self._pending:
            raise HostLinkError(f"a request with MTI/STAN/TID {key} is already in flight")
        future: asyncio.Future[Exchange] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        self._network_codes[key] = network_code
        return future

    def forget(self, key: MatchKey, future: asyncio.Future[Exchange]) -> None:
        """The request gave up (answered, timed out, cancelled): a later response is unmatched."""
        if self._pending.get(key) is future:
            del self._pending[key]
            del self._network_codes[key]

    def deliver(self, exchange: Exchange) -> bool:
        """Hand a response to the request waiting for it; ``False`` when none was."""
        message = exchange.frame.message
        key = match_key(message)
        future = self._pending.get(key)
        if future is None and not key[1] and key[0].startswith("08"):
            future = self._only_one_waiting(key[0], key[2], network_code(message))
        if future is None or future.done():
            answered = future is not None and not future.cancelled() and not future.exception()
            self._on_unmatched(exchange, future.result() if answered else None)
            return False
        future.set_result(exchange)
        return True

    def _only_one_waiting(self, mti: str, tid: str, code: str) -> asyncio.Future[Exchange] | None:
        """The request answered by ``mti`` of ``tid`` and network management code ``code`` still
        waiting, if it is the only one (no money moves on a network-management answer; two
        would be a guess) and not a sign-in."""
        if not code or code in SCHEMES:
            return None
        waiting = [
            future
            for key, future in self._pending.items()
            if key[0] == mti and key[2] == tid and self._network_codes[key] == code
            and not future.done()
        ]  # fmt: skip
        return waiting[0] if len(waiting) == 1 else None

    def fail_all(self, reason: str) -> None:
        """The connection is gone: every request in flight fails with ``reason``."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(HostLinkError(reason))
        self._pending.clear()
        self._network_codes.clear()


def network_code(message: Message) -> str:
    """60.3 of a network-management message, "" without one."""
    field_60 = message.get(60)
    return field_60[8:11] if isinstance(field_60, str) else ""
