"""Wrap mode (DESIGN.md section 10): the agent owns the host session. An app request is decoded,
held while the terminal is unregistered, sent once through the :class:`Sender`, and a refusal is
handed to recovery, whose final answer goes back to the app. The app's sign-in (0800 with 60.3
001, 003 or 004) is the agent's; other network management goes to the host, and what a download
the app runs itself brings is kept for the agent too (``observe``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from agent.host.link import HostLinkError
from agent.host.signin import SignInError
from agent.journal import JournalError
from agent.transaction.classes import NETWORK_MANAGEMENT, classify
from agent.transaction.sender import Attempt, Sender
from agent.transaction.stan_map import replay_key
from agent.transaction.stats import GatewayStats
from agent.wire.errors import DecodeError
from agent.wire.message import Message, decode_message, encode_message
from agent.wire.profile import Profile
from agent.wire.working_keys import SCHEMES
from drivers.module import ModuleError

log = logging.getLogger(__name__)


class AfterRefusal(Protocol):
    """What wrap mode needs of recovery (:class:`agent.recovery.engine.Recovery`)."""

    def hold(self) -> tuple[str, str] | None: ...
    async def settled(self) -> None: ...
    async def after_response(self, request: Message, attempt: Attempt) -> Message: ...


class WrapMode:
    def __init__(
        self,
        sender: Sender,
        recovery: AfterRefusal,
        profile: Callable[[], Profile],
        stats: GatewayStats,
        observe: Callable[[Message, Message], Awaitable[None]],
    ) -> None:
        self.sender = sender
        self._observe = observe
        self.recovery = recovery
        self._profile = profile
        self.stats = stats
        # requests in flight by (app STAN, replay key): a repetition waits for the first
        self._in_flight: dict[tuple[str, str], asyncio.Event] = {}

    async def process(self, frame: bytes) -> bytes | None:
        """The answer to one app frame, or ``None`` to close the app's connection."""
        profile = self._profile()
        try:
            request = decode_message(frame, profile)
        except DecodeError as exc:
            log.warning("payment app sent a malformed message: %s", exc)
            self.stats.bad_frames += 1
            return None
        if request.mti == "0800" and str(request.get(60, ""))[8:11] in SCHEMES:
            answer = await self._sign_in_for_app(request)
        else:
            answer = await self._wrap(request)
        return encode_message(answer, profile)

    def undelivered(self, answer: bytes) -> None:
        """The app did not get ``answer``: an approval of a reversible request is reversed
        (reason 06, DESIGN.md section 10)."""
        try:
            message = decode_message(answer, self._profile())
        except DecodeError:  # pragma: no cover - the agent encoded it
            return
        self.sender.reverse_undelivered(message)

    async def _wrap(self, request: Message) -> Message:
        await self.recovery.settled()  # a recovery or the start-up sign-in first
        cls = classify(request)
        if cls is NETWORK_MANAGEMENT:
            answer = await self._send(request)
            try:
                await self._observe(request, answer)
            except Exception:  # keeping a copy must never cost the app its answer
                log.exception("the app's download answer could not be kept")
            return answer
        if cls is None or not cls.held:
            return await self._send(request)
        key = (str(request.get(11, "")), replay_key(request))
        # the app repeats a request still in flight: wait for its answer
        while (first := self._in_flight.get(key)) is not None:
            await first.wait()
        replayed = self.sender.stan_map.replayed(request)
        if replayed is not None:
            return replayed
        held = self.recovery.hold()
        if held is not None:
            return self.sender.local(request, *held)
        done = self._in_flight[key] = asyncio.Event()
        try:
            return await self._send(request)
        finally:
            if self._in_flight.get(key) is done:
                del self._in_flight[key]
            done.set()

    async def _send(self, request: Message) -> Message:
        attempt = await self.sender.attempt(request)
        if attempt.exchange is None:
            return attempt.answer
        try:
            return await self.recovery.after_response(request, attempt)
        except Exception:  # a bug in recovery must not leave the app without its answer
            log.exception("recovery failed; passing the host's answer on")
            return attempt.answer

    async def _sign_in_for_app(self, request: Message) -> Message:
        """The app's sign-in is the agent's (it owns the session): the app gets the host's 0810
        without field 62, whose keys only the module may have, and with its own STAN."""
        try:
            result = await self.sender.sign_in()
        except (SignInError, HostLinkError, ModuleError, JournalError) as exc:
            code = getattr(exc, "response_code", None) or "96"
            return self.sender.local(request, code, f"sign-in failed: {exc}")
        fields = {n: v for n, v in result.response.fields.items() if n not in (62, 64)}
        if 11 in request:
            fields[11] = request.fields[11]
        return Message(result.response.mti, dict(sorted(fields.items())))
