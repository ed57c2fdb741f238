"""Pass-through mode (DESIGN.md section 10): the app sends complete host frames (TPDU and header
included, no length); they are forwarded untouched and only inspected (journalled, masked). The
app does its own MACs and its own reversals."""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.host.link import HostLink, HostLinkError
from agent.journal import Journal, JournalError
from agent.transaction.app_socket import Reply
from agent.transaction.stats import GatewayStats
from agent.wire.errors import DecodeError
from agent.wire.frame import Layout, decode_frame, with_length
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

    def failed(self, frame: bytes, reason: str) -> None:
        """Only the host answers a host frame: the connection closes (the app keeps its own
        session and reversals in this mode)."""
        log.error("pass-through frame not answered: %s", reason)

    async def process(self, frame: bytes) -> Reply | None:
        """The host's answer to one app frame, or ``None`` to close the app's connection."""
        try:
            inspected = decode_frame(frame, Layout.TPDU, self._profile())
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
        return Reply(exchange.raw)
