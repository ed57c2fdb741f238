"""The payment gateway (DESIGN.md section 10): the payment app's socket, the transaction path to
the host, and the reversal queue.

Wrap mode: the app sends ``length + message`` (no TPDU/header). The agent gives the request its
own STAN, fills 41/42 (and 60 when absent), computes the MAC through the card module, journals it
as pending, sends it, checks the response MAC, journals the outcome and answers the app with the
app's STAN. A financial request that may have reached the host without a usable answer becomes a
reversal, sent before the next financial request and retried until the host confirms it.

Pass-through mode: the app sends complete host frames; they are forwarded untouched and only
inspected (journalled, masked). The app does its own MAC and its own reversals.

When the agent answers by itself, the response carries field 39 and, in field 63, ``AGENT`` and
the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import Config
from agent.journal import Journal, JournalError
from agent.link import Exchange, HostLink, HostLinkError, HostUnavailable
from agent.signin import SignInError, sign_in
from agent.wire import codes
from agent.wire.builders import (
    MAC_PLACEHOLDER,
    MESSAGE_TYPE_PURCHASE,
    Terminal,
    batch_text,
    field60,
    response_to,
    reversal_request,
)
from agent.wire.errors import DecodeError, WireError
from agent.wire.frame import Layout, decode_frame, with_length
from agent.wire.mac import encode_with_mac, mac_matches
from agent.wire.message import FieldValue, Message, decode_message, encode_message
from agent.wire.profile import Profile
from drivers.module import CardModule, ModuleError

if TYPE_CHECKING:
    from agent.recovery import Recovery

log = logging.getLogger(__name__)

MAX_APP_FRAME = 4096
# Once a frame has begun, all of it must arrive within this time (a stalled or slow-loris client
# must not hold a reader forever). Between frames a connection may stay idle.
FRAME_TIMEOUT = 5.0
FINANCIAL = {"0200"}


class ReversalPending(Exception):
    """A queued reversal could not be confirmed yet; financial requests wait for it."""


@dataclass
class GatewayStats:
    requests: int = 0
    local_answers: int = 0
    reversals_sent: int = 0
    bad_frames: int = 0


@dataclass(frozen=True)
class Attempt:
    """What one try of a request gave the app; ``exchange`` is the host's response when the
    answer is the host's, ``None`` when the agent answered itself."""

    answer: Message
    exchange: Exchange | None


def with_batch(field_60: FieldValue | None, batch: int) -> str:
    """Field 60 of a request with 60.2 set to the current batch (the host's, DESIGN.md section
    10); a purchase's 60 when the app sent none."""
    if not isinstance(field_60, str) or len(field_60) < 8:
        return field60(MESSAGE_TYPE_PURCHASE, batch)
    return field_60[:2] + batch_text(batch) + field_60[8:]


def local_answer(request: Message, code: str, reason: str) -> Message:
    """The agent's own answer to ``request``."""
    response = response_to(request, code)
    response.fields.pop(64, None)
    response.fields[63] = f"AGENT {reason}"[:163]
    return response


class Gateway:
    def __init__(
        self, config: Config, journal: Journal, module: CardModule, link: HostLink
    ) -> None:
        self.config = config
        self.journal = journal
        self.module = module
        self.link = link
        self.terminal = Terminal(config.terminal.tid, config.terminal.mid)
        self.stats = GatewayStats()
        self._reversal_lock = asyncio.Lock()
        self._signin_lock = asyncio.Lock()
        self._signins_running = 0
        # Cleared while a sign-in replaces the working keys: requests wait rather than go out
        # MACed under keys the host is about to forget.
        self._keys_settled = asyncio.Event()
        self._keys_settled.set()
        self.reversals_waiting = asyncio.Event()  # set when the journal has queued reversals
        self._servers: list[asyncio.Server] = []
        self._clients: set[asyncio.Task[None]] = set()
        self.frame_timeout = FRAME_TIMEOUT
        self.recovery: Recovery | None = None  # set by the agent: what to do after a 97

    @property
    def profile(self) -> Profile:
        """The wire profile in effect (a reload may change it)."""
        return self.config.wire.profile

    # ---------------------------------------------------------------------------- sockets

    async def serve(self, unix_path: Path | None, tcp_port: int = 0) -> None:
        if unix_path is not None:
            unix_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                unix_path.unlink()
            server = await asyncio.start_unix_server(self._client, path=str(unix_path))
            os.chmod(unix_path, 0o660)
            self._servers.append(server)
        if tcp_port:
            self._servers.append(await asyncio.start_server(self._client, "127.0.0.1", tcp_port))

    @property
    def tcp_port(self) -> int | None:
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                if isinstance(name, tuple):
                    return name[1]
        return None

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers.clear()

    async def drain(self, timeout: float) -> None:
        """Wait for the transactions in flight (SIGTERM), at most ``timeout`` seconds."""
        if self._clients:
            await asyncio.wait(list(self._clients), timeout=timeout)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                first = await reader.readexactly(1)
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
                    log.warning(
                        "payment app stalled mid-frame for %g s; closing", self.frame_timeout
                    )
                    self.stats.bad_frames += 1
                    return
                task = asyncio.current_task()
                assert task is not None
                self._clients.add(task)
                try:
                    answer = await self.process(frame)
                finally:
                    self._clients.discard(task)
                if answer is None:
                    return
                writer.write(with_length(answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    # ------------------------------------------------------------------------- processing

    async def process(self, frame: bytes) -> bytes | None:
        """The answer to one frame from the app, or ``None`` to close its connection."""
        self.stats.requests += 1
        if self.config.gateway.mode == "pass-through":
            return await self._pass_through(frame)
        try:
            request = decode_message(frame, self.profile)
        except DecodeError as exc:
            log.warning("payment app sent a malformed message: %s", exc)
            self.stats.bad_frames += 1
            return None
        if request.mti == "0800":
            answer = await self._sign_in_for_app(request)
        else:
            answer = await self._wrap(request)
        return encode_message(answer, self.profile)

    async def _wrap(self, request: Message) -> Message:
        recovery = self.recovery
        if recovery is not None and request.mti in FINANCIAL:
            held = recovery.hold()
            if held is not None:
                return self._local(request, *held)
        attempt = await self.attempt(request)
        if recovery is None or attempt.exchange is None:
            return attempt.answer
        try:
            return await recovery.after_response(request, attempt)
        except Exception:  # a bug in recovery must not leave the app without its answer
            log.exception("recovery failed; passing the host's answer on")
            return attempt.answer

    async def attempt(self, request: Message) -> Attempt:
        """Send ``request`` once, as a new transaction (new STAN, fresh MAC, the TID/MID
        configured now): what a retry after a remedy needs too."""
        financial = request.mti in FINANCIAL
        await self._keys_settled.wait()

        def local(code: str, reason: str) -> Attempt:
            return Attempt(self._local(request, code, reason), None)

        if financial and self.journal.has_queued_reversals:
            try:
                await self.send_reversals()
            except ReversalPending as exc:
                return local("96", f"reversal pending: {exc}")
        outgoing = self._prepare(request)
        try:
            transaction, encoded = await asyncio.to_thread(self._record, outgoing, financial)
        except ModuleError as exc:
            return local("96", f"card module: {exc}")
        except (JournalError, WireError) as exc:
            return local("96", str(exc))
        try:
            exchange = await self.link.request(outgoing, encoded)
        except HostUnavailable as exc:
            self._close_unanswered(transaction, "not-sent", str(exc), None)
            return local("96", str(exc))
        except HostLinkError as exc:
            reason = "98" if financial else None
            self._close_unanswered(transaction, "timed-out", str(exc), reason)
            if financial:
                self.reversals_waiting.set()
            return local("98", f"{exc}; reversal queued" if financial else str(exc))
        return await self._settle(request, outgoing, transaction, exchange, financial)

    def _close_unanswered(
        self, transaction: int, state: str, detail: str, reversal_reason: str | None
    ) -> None:
        """Journal a request that got no answer. If even that fails (a full disk), the row stays
        pending, which the next start turns into a reversal: nothing is lost, the app is told."""
        try:
            self.journal.finish(transaction, state, detail=detail, reversal_reason=reversal_reason)
        except JournalError as exc:
            log.error("transaction %d left pending for the next start: %s", transaction, exc)

    def _record(self, outgoing: Message, financial: bool) -> tuple[int, bytes]:
        """In a worker thread: journal the request as pending (taking its STAN), then MAC it.
        A request that cannot be MACed is closed as never sent."""
        transaction = self.journal.begin(outgoing, financial=financial, assign_stan=True)
        try:
            return transaction, self._encode(outgoing)
        except (ModuleError, WireError) as exc:
            self.journal.finish(transaction, "not-sent", detail=str(exc))
            raise

    async def _settle(
        self,
        request: Message,
        outgoing: Message,
        transaction: int,
        exchange: Exchange,
        financial: bool,
    ) -> Attempt:
        response = exchange.frame.message
        try:
            mac_ok = await asyncio.to_thread(
                self._close_checked, outgoing, transaction, exchange, financial
            )
        except JournalError as exc:
            # The row stays pending and becomes a reversal: the app must not see an approval.
            reason = f"{exc}; the transaction will be reversed"
            return Attempt(self._local(request, "96", reason), None)
        if not mac_ok:
            if financial:
                self.reversals_waiting.set()
            reason = "response MAC wrong; reversal queued"
            return Attempt(self._local(request, "A0", reason), None)
        answer = Message(response.mti, dict(response.fields))
        answer.fields.pop(64, None)  # verified here; the app has no key to check it
        if 11 in request:
            answer.fields[11] = request.fields[11]
        else:
            answer.fields.pop(11, None)
        return Attempt(answer, exchange)

    def _close_checked(
        self, outgoing: Message, transaction: int, exchange: Exchange, financial: bool
    ) -> bool:
        """In a worker thread: check the response MAC and close the transaction durably, with a
        reversal (A0) queued if the MAC is wrong. Returns whether the MAC was right."""
        response = exchange.frame.message
        code = response.text(39, "")
        approved = codes.is_code(code) and codes.lookup(code).category is codes.Category.APPROVED
        if not self._mac_ok(outgoing, exchange, approved):
            self.journal.finish(
                transaction,
                "mac-failed",
                response,
                detail="response MAC does not match",
                reversal_reason="A0" if financial else None,
            )
            return False
        self.journal.finish(transaction, "completed", response)
        return True

    def _mac_ok(self, outgoing: Message, exchange: Exchange, approved: bool) -> bool:
        """An approval of a MACed request must carry a good MAC. A decline moves no money, and
        the declines that matter most come from a host that lost our session or keys (97, A0):
        they carry no MAC, or one under keys we no longer share. Blocks on the module: call in
        a thread."""
        if 64 not in outgoing or not approved:
            return True
        body = exchange.raw[11:]  # TPDU (5) + header (6)
        if 64 not in exchange.frame.message:
            return False
        try:
            return mac_matches(body, self.module.mac_from_block)
        except ModuleError as exc:
            log.error("cannot check the response MAC: %s", exc)
            return False

    def _prepare(self, request: Message) -> Message:
        fields = dict(request.fields)
        fields.pop(11, None)  # the journal assigns the agent's own STAN
        fields[41], fields[42] = self.terminal.tid, self.terminal.mid
        if request.mti in FINANCIAL:
            fields[60] = with_batch(fields.get(60), self.journal.batch)
            fields[64] = MAC_PLACEHOLDER  # financial requests always carry a MAC
        return Message(request.mti, dict(sorted(fields.items())))

    def _encode(self, message: Message) -> bytes:
        """Encode, with the MAC from the module when field 64 is present (blocks on the module:
        call in a thread)."""
        if 64 not in message:
            return encode_message(message, self.profile)
        slot = self.config.module.key_slot

        def mac_of_block(r: bytes) -> bytes:
            return self.module.mac_from_block(r, slot)

        return encode_with_mac(message, mac_of_block, self.profile)

    def _local(self, request: Message, code: str, reason: str) -> Message:
        self.stats.local_answers += 1
        log.warning("answered %s locally with %s: %s", request.mti, code, reason)
        with contextlib.suppress(JournalError):
            self.journal.event("local-answer", mti=request.mti, code=code, reason=reason)
        return local_answer(request, code, reason)

    async def _sign_in_for_app(self, request: Message) -> Message:
        try:
            await self.sign_in()
        except (SignInError, HostLinkError, ModuleError, JournalError) as exc:
            code = getattr(exc, "response_code", None) or "96"
            return self._local(request, code, f"sign-in failed: {exc}")
        return response_to(request, "00")

    async def sign_in(self) -> None:
        self._signins_running += 1
        self._keys_settled.clear()
        try:
            async with self._signin_lock:
                await sign_in(
                    terminal=self.terminal,
                    scheme=self.config.wire.key_scheme,
                    key_layout=self.config.wire.key_layout,
                    key_slot=self.config.module.key_slot,
                    journal=self.journal,
                    module=self.module,
                    link=self.link,
                )
        finally:
            self._signins_running -= 1
            if not self._signins_running:
                self._keys_settled.set()

    # -------------------------------------------------------------------------- reversals

    async def send_reversals(self) -> int:
        """Send every queued reversal until the host confirms it; returns how many were
        confirmed. Raises :class:`ReversalPending` at the first that cannot be confirmed."""
        confirmed = 0
        async with self._reversal_lock:
            for queued in self.journal.queued_reversals():
                message = reversal_request(queued.message, queued.reason)
                try:
                    encoded = await asyncio.to_thread(self._encode, message)
                    exchange = await self.link.request(message, encoded)
                except (HostLinkError, ModuleError) as exc:
                    self.journal.reversal_attempted(queued.id, str(exc))
                    raise ReversalPending(f"STAN {queued.message.text(11)}: {exc}") from None
                self.stats.reversals_sent += 1
                response = exchange.frame.message
                code = response.text(39, "")
                outcome = codes.reversal_outcome(code)
                done = outcome is not codes.ReversalOutcome.NOT_DONE
                mac_ok = done and await asyncio.to_thread(self._mac_ok, message, exchange, True)
                if not mac_ok:
                    reason = f"host answered {code}" if not done else "response MAC wrong"
                    self.journal.reversal_attempted(queued.id, reason)
                    raise ReversalPending(f"STAN {queued.message.text(11)}: {reason}")
                if outcome is codes.ReversalOutcome.CONFLICT:
                    log.error(
                        "reversal of STAN %s closed as a conflict: the host answered 22 "
                        "(suspected malfunction); a person must reconcile it",
                        queued.message.text(11),
                    )
                self.journal.reversal_closed(queued.id, response, outcome.value)
                confirmed += 1
        return confirmed

    # ----------------------------------------------------------------------- pass-through

    async def _pass_through(self, frame: bytes) -> bytes | None:
        try:
            inspected = decode_frame(frame, Layout.TPDU, self.profile)
        except DecodeError as exc:
            log.warning("payment app sent an undecodable frame in pass-through mode: %s", exc)
            self.stats.bad_frames += 1
            return None
        request = inspected.message
        try:
            transaction = self.journal.begin(request, financial=False)
        except JournalError as exc:
            log.error("not forwarding: %s", exc)
            return None
        try:
            exchange = await self.link.forward(request, with_length(frame))
        except HostLinkError as exc:
            self.journal.finish(transaction, "timed-out", detail=str(exc))
            log.warning("pass-through %s got no response: %s", request.mti, exc)
            return None
        self.journal.finish(transaction, "completed", exchange.frame.message)
        return exchange.raw
