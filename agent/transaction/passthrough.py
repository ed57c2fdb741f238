"""Pass-through mode (DESIGN.md section 10): the app sends complete host frames (TPDU and header
included, no length); they are forwarded untouched and only inspected (journalled, masked). The
app does its own MACs and its own reversals."""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.host.link import HostLink, HostLinkError, HostUnavailable
from agent.journal import Journal, JournalError
from agent.transaction.app_socket import Reply
from agent.transaction.sender import fitted, local_answer, unreadable_answer
from agent.transaction.stats import GatewayStats
from agent.wire.errors import DecodeError, WireError
from agent.wire.frame import (
    HEADER_BYTES,
    LENGTH_BYTES,
    TPDU_BYTES,
    Frame,
    Header,
    Layout,
    Tpdu,
    decode_frame,
    host_frame,
    with_length,
)
from agent.wire.message import Message, encode_message
from agent.wire.profile import Profile

log = logging.getLogger(__name__)


class PassThrough:
    def __init__(
        self,
        journal: Journal,
        link: HostLink,
        profile: Callable[[], Profile],
        stats: GatewayStats,
    ) -> None:
        self.journal = journal
        self.link = link
        self._profile = profile
        self.stats = stats

    def failed(self, frame: bytes, reason: str) -> bytes | None:
        """The agent's 96 with the reason, in the host's framing, when the frame can be read;
        else its 30 (:meth:`_unreadable`)."""
        try:
            inspected = decode_frame(frame, Layout.TPDU, self._profile())
        except DecodeError as exc:
            unreadable = self._unreadable(frame, str(exc))
            return None if unreadable is None else unreadable.frame
        reply = self._local(inspected, "96", "request.agent-error", reason)
        return None if reply is None else reply.frame

    async def process(self, frame: bytes) -> Reply | None:
        """The host's answer to one app frame; the agent's own answer when the host gave none
        (the app's reversal logic takes it from there), or when the message does not decode
        (30, not sent); ``None`` only when not even its TPDU and header can be read, which
        closes the app's connection."""
        try:
            inspected = decode_frame(frame, Layout.TPDU, self._profile())
        except DecodeError as exc:
            log.warning("payment app sent an undecodable frame in pass-through mode: %s", exc)
            self.stats.bad_frames += 1
            return self._unreadable(frame, str(exc))
        request = inspected.message
        journal = self.journal
        try:
            transaction = await journal.run(journal.begin, request, financial=False)
        except JournalError as exc:
            log.error("pass-through %s not forwarded: %s", request.mti, exc)
            return self._local(inspected, "96", "storage.journal-unwritable", f"not sent: {exc}")
        try:
            exchange = await self.link.forward(request, with_length(frame))
        except HostLinkError as exc:
            log.warning("pass-through %s got no response: %s", request.mti, exc)
            sent = not isinstance(exc, HostUnavailable)
            await self._finish(transaction, "timed-out" if sent else "not-sent", detail=str(exc))
            if sent:
                return self._local(inspected, "98", "host.no-answer", str(exc))
            return self._local(inspected, "96", "network.host-unreachable", str(exc))
        await self._finish(transaction, "completed", exchange.frame.message)
        return Reply(exchange.raw)

    async def _finish(self, transaction: int, state: str, *args: object, **kwargs: str) -> None:
        try:
            await self.journal.run(self.journal.finish, transaction, state, *args, **kwargs)
        except JournalError as exc:  # the app keeps its own reversals in this mode
            log.error("pass-through transaction %d not closed in the journal: %s", transaction, exc)

    def _unreadable(self, frame: bytes, reason: str) -> Reply | None:
        """30 with the reason for a message that does not decode (a field the profile does not
        define is never a reason to close the connection, DESIGN.md section 4), in the host's
        framing; None when the TPDU and header themselves cannot be read."""
        try:
            tpdu = Tpdu.from_bytes(frame[:TPDU_BYTES], 0)
            header = Header.from_bytes(frame[TPDU_BYTES : TPDU_BYTES + HEADER_BYTES], TPDU_BYTES)
        except DecodeError:
            return None
        answer = unreadable_answer(frame[TPDU_BYTES + HEADER_BYTES :], reason)
        return self._framed(answer, tpdu, header)

    def _local(self, inspected: Frame, code: str, finding: str, reason: str) -> Reply | None:
        """The agent's own answer in the host's framing: TPDU swapped, the request's header."""
        assert inspected.tpdu is not None and inspected.header is not None
        answer = local_answer(inspected.message, code, finding, reason)
        return self._framed(answer, inspected.tpdu, inspected.header)

    def _framed(self, answer: Message, tpdu: Tpdu, header: Header) -> Reply | None:
        profile = self._profile()
        try:
            encoded = encode_message(fitted(answer, profile), profile)
        except WireError as exc:
            log.error("pass-through: no answer can be made for %s: %s", answer.mti, exc)
            return None
        # the payment socket puts the length in front: the frame goes without its own
        return Reply(host_frame(encoded, tpdu.swapped(), header)[LENGTH_BYTES:])
