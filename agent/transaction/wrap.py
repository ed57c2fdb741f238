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

from agent import stages
from agent.host.link import HostLinkError
from agent.host.signin import SignInError
from agent.journal import JournalError
from agent.transaction.app_socket import Reply
from agent.transaction.classes import NETWORK_MANAGEMENT, classify
from agent.transaction.sender import (
    Attempt,
    Sender,
    encode_local,
    fitted,
    local_answer,
    unreadable_answer,
)
from agent.transaction.stats import GatewayStats
from agent.wire import codes
from agent.wire.errors import DecodeError, WireError
from agent.wire.message import Message, decode_message, encode_message
from agent.wire.profile import Profile
from agent.wire.working_keys import SCHEMES
from drivers.module import ModuleError

log = logging.getLogger(__name__)


class AfterRefusal(Protocol):
    """What wrap mode needs of recovery (:class:`agent.recovery.engine.Recovery`)."""

    def hold(self) -> tuple[str, str, str] | None: ...
    async def settled(self) -> bool: ...
    async def after_response(self, request: Message, attempt: Attempt) -> Attempt: ...
    async def after_sign_in_failed(self, failure: Exception) -> Message | None: ...
    def sign_in_limited(self) -> tuple[str, str, str] | None: ...


class OneAtATime:
    """Requests of one app STAN go one at a time, each until the app has (or has not) got its
    answer: a repetition is decided only once the first is settled, never both answered from
    one host answer, never replayed while the first's approval may still be reversed."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def enter(self, key: str) -> Callable[[], None]:
        """Wait for ``key``'s turn; returns the release, to be called exactly once."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._leave(key)
            raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                lock.release()
                self._leave(key)

        return release

    def _leave(self, key: str) -> None:
        lock, users = self._locks[key]
        if users == 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)


def unreadable(frame: bytes, reason: str, profile: Profile) -> bytes:
    """The answer to a frame that does not decode, encoded (:func:`unreadable_answer`)."""
    return encode_local(unreadable_answer(frame, reason), profile)


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
        self._one_at_a_time = OneAtATime()

    async def process(self, frame: bytes) -> Reply:
        """The answer to one app frame; its ``settle`` hears whether the app got it."""
        profile = self._profile()
        try:
            request = decode_message(frame, profile)
        except DecodeError as exc:
            log.warning("payment app sent a malformed message: %s", exc)
            self.stats.bad_frames += 1
            answer = unreadable(frame, str(exc), profile)
            # journalled as every local answer is (DESIGN.md section 15), under the MTI it had
            self.sender.journal.note("local-answer", mti=frame[:2].hex(), code="30",
                                     finding="request.format", reason=str(exc))  # fmt: skip
            return Reply(answer)
        stages.mark("decoded")
        if request.mti == "0800" and str(request.get(60, ""))[8:11] in SCHEMES:
            answer = await self._sign_in_for_app(request)
            return Reply(self._encode(request, answer, profile)[0])
        return await self._wrap(request, profile)

    def failed(self, frame: bytes, reason: str) -> bytes:
        """96 with the reason, for a frame whose answering failed unexpectedly."""
        profile = self._profile()
        try:
            request = decode_message(frame, profile)
        except DecodeError as exc:
            return unreadable(frame, str(exc), profile)
        return encode_local(local_answer(request, "96", "request.agent-error", reason), profile)

    def _encode(
        self,
        request: Message,
        answer: Message,
        profile: Profile,
        ready: tuple[Profile, bytes] | None = None,
    ) -> tuple[bytes, bool]:
        """``answer`` for the app, and ``True``; or, for a host answer the app's profile cannot
        carry, a 96 with the reason, and ``False``: the app is not told what the host said.
        ``ready``: ``answer`` encoded already, under the profile named (a reload may have come
        between)."""
        if ready is not None and ready[0] is profile:
            return ready[1], True
        try:
            return encode_message(fitted(answer, profile), profile), True
        except WireError as exc:
            log.error("the answer to %s cannot be encoded for the app: %s", request.mti, exc)
            refusal = local_answer(request, "96", "request.answer-not-encodable", str(exc))
            return encode_local(refusal, profile), False

    async def _wrap(self, request: Message, profile: Profile) -> Reply:
        if not await self.recovery.settled():  # a recovery or the start-up sign-in first
            # not sent under keys or a TID about to change (DESIGN.md section 7)
            reason = (
                "a repair of the terminal (a sign-in, re-provisioning) did not end within "
                "recovery.deadline: not sent; the repair goes on, try again in a moment"
            )
            answer = self.sender.local(request, "96", "recovery.still-running", reason)
            return Reply(self._encode(request, answer, profile)[0])
        cls = classify(request)
        if cls is NETWORK_MANAGEMENT:
            answer = (await self._send(request)).answer
            try:
                await self._observe(request, answer)
            except Exception:  # keeping a copy must never cost the app its answer
                log.exception("the app's download answer could not be kept")
            return Reply(self._encode(request, answer, profile)[0])
        if cls is not None and cls.name == "reversal":
            # after the request it reverses (its app STAN in 11) has its answer settled: sent
            # while that one is in flight, its approval would still reach the app afterwards,
            # and be kept for a repetition (section 10: the two are serialised)
            release = await self._one_at_a_time.enter(str(request.get(11, "")))
            try:
                answer = (await self._send(request)).answer
            finally:
                release()
            return Reply(self._encode(request, answer, profile)[0])
        if cls is None or not cls.held:
            return Reply(self._encode(request, (await self._send(request)).answer, profile)[0])
        release = await self._one_at_a_time.enter(str(request.get(11, "")))

        async def released(_: bool) -> None:
            release()

        try:
            stan_map, terminal = self.sender.stan_map, self.sender.terminal
            first = ""  # a try of this very request the host may have taken: under its STAN
            try:
                replayed = await stan_map.replayed(request, terminal)
                if replayed is None and cls.repeats_its_stan:
                    first = await stan_map.unanswered_try(request, terminal)
            except JournalError as exc:
                reason = f"cannot tell whether it repeats an earlier request, not sent: {exc}"
                answer = self.sender.local(request, "96", "storage.journal-unusable", reason)
                return Reply(self._encode(request, answer, profile)[0], released)
            if replayed is not None:
                return Reply(self._encode(request, replayed, profile)[0], released)
            held = self.recovery.hold()
            if held is not None:
                answer = self.sender.local(request, *held)
                return Reply(self._encode(request, answer, profile)[0], released)
            stages.mark("admitted")  # not a replay, not held, its app STAN's turn
            attempt = await self._send(request, first)
            # an approval that cannot be encoded for the app never reaches it: it is reversed
            frame, told = self._encode(request, attempt.answer, profile, attempt.for_app)
            stages.mark("encoded")
        except BaseException:
            release()
            raise

        async def settle(delivered: bool) -> None:
            try:
                if not (delivered and told) and attempt.transaction is not None:
                    await self.sender.reverse_undelivered(attempt.transaction)
            finally:
                release()  # only now may a repetition look at what the first one left

        return Reply(frame, settle)

    async def _send(self, request: Message, wire_stan: str = "") -> Attempt:
        attempt = await self.sender.attempt(request, wire_stan=wire_stan)
        if attempt.exchange is None:
            return attempt
        try:
            return await self.recovery.after_response(request, attempt)
        except Exception:  # a bug in recovery must not leave the app without its answer
            log.exception("recovery failed; passing the host's answer on")
            return attempt

    async def _sign_in_for_app(self, request: Message) -> Message:
        """The app's sign-in is the agent's (it owns the session): the app gets the host's 0810
        without field 62, whose keys only the module may have, and with its own STAN. One the
        host refuses as it refuses an unregistered terminal (or whose keys the module refuses)
        is recovered from as the start-up's is (DESIGN.md section 7), and the app gets what that
        came to: the 0810 of the repair's sign-in, or the refusal and why. Under a host-side
        incident it is one of the sign-ins recovery limits (section 7): one asked for too soon
        is answered locally."""
        held = self.recovery.sign_in_limited()
        if held is not None:
            return self.sender.local(request, *held)
        try:
            result = await self.sender.sign_in()
        except (SignInError, HostLinkError, ModuleError, JournalError) as exc:
            final = await self.recovery.after_sign_in_failed(exc)
            repaired = self.sender.last_signin
            if final is not None and codes.approved(final.text(39, "")) and repaired is not None:
                return _for_the_apps_sign_in(request, repaired.response)
            held = self.recovery.hold()
            if held is not None:  # the terminal is unregistered now: why, and what to do
                return self.sender.local(request, *held)
            code = getattr(exc, "response_code", None) or "96"
            return self.sender.local(request, code, "host.signin-failed", str(exc))
        return _for_the_apps_sign_in(request, result.response)


def _for_the_apps_sign_in(request: Message, response: Message) -> Message:
    """The host's 0810 as the app gets it: without the keys (62) and their MAC, its STAN."""
    fields = {n: v for n, v in response.fields.items() if n not in (62, 64)}
    if 11 in request:
        fields[11] = request.fields[11]
    return Message(response.mti, dict(sorted(fields.items())))
