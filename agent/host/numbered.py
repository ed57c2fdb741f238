"""The agent's own network messages to the host (a download step, the master-key download):
numbered by the journal, journalled (field 62 masked: key material may be in it), sent."""

from __future__ import annotations

from agent.host.link import HostLink, HostLinkError
from agent.journal import Journal
from agent.wire.builders import Terminal, download_request
from agent.wire.message import Message


async def send_numbered(
    journal: Journal,
    link: HostLink,
    mti: str,
    terminal: Terminal,
    code: str,
    field62: bytes | None = None,
) -> Message:
    """An 0800 or 0820 with 60.3 ``code``: numbered, journalled, sent; the host's answer.
    Raises :class:`HostLinkError` when the host does not answer."""
    request, transaction = await journal.run(
        journal.begin_numbered,
        lambda stan, batch: download_request(
            mti, terminal, stan=stan, batch=batch, code=code, field62=field62
        ),
    )
    try:
        exchange = await link.request(request)
    except HostLinkError as exc:
        await journal.run(journal.finish, transaction, "failed", detail=str(exc))
        raise
    answer = exchange.frame.message
    state = "completed" if answer.text(39, "") == "00" else "declined"
    await journal.run(journal.finish, transaction, state, answer)
    return answer
