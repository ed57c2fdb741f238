"""Sign-in (签到): 0800 -> 0810 -> working keys into the card module -> KCVs checked, journalled.

The host's batch number (60.2 of the 0810) becomes the terminal's: a host that checks it answers
77 to requests of any other batch.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass

from agent.host.link import HostLink, HostLinkError
from agent.journal import Journal
from agent.wire import codes
from agent.wire.builders import Terminal, signin_request
from agent.wire.errors import WireError
from agent.wire.message import Message
from agent.wire.working_keys import parse_field62
from drivers.module import CardModule, ModuleError

log = logging.getLogger(__name__)


class SignInError(Exception):
    """The sign-in did not give the module working keys; the text says why."""

    def __init__(self, message: str, response_code: str | None = None) -> None:
        super().__init__(message)
        self.response_code = response_code


@dataclass(frozen=True)
class SignInResult:
    scheme: str
    layout: int
    kcvs: dict[str, str]
    host_time: str | None  # MMDDhhmmss from fields 13 and 12
    batch: int | None  # the host's, from 60.2 of the 0810
    response: Message  # the host's 0810 (field 62 is key material: only the module gets it)
    endpoint: str  # HOST:PORT of the host that signed the terminal in


def host_batch(response: Message) -> int | None:
    """60.2 of an 0810, when the host sent one."""
    value = response.get(60)
    if isinstance(value, str) and len(value) >= 8 and value[2:8].isdigit():
        return int(value[2:8])
    return None


async def sign_in(
    *,
    terminal: Terminal,
    scheme: str,
    key_layout: int,
    key_slot: int,
    journal: Journal,
    module: CardModule,
    link: HostLink,
) -> SignInResult:
    request, transaction = await journal.run(
        journal.begin_numbered,
        lambda stan, batch: signin_request(terminal, stan=stan, batch=batch, scheme=scheme),
    )
    finish = functools.partial(journal.run, journal.finish, transaction)
    try:
        exchange = await link.request(request)
    except HostLinkError as exc:
        await finish("failed", detail=str(exc))
        raise
    response = exchange.frame.message
    code = response.text(39, "")
    if code != "00":
        rc = codes.lookup(code) if codes.is_code(code) else None
        text = f"{rc.en} / {rc.zh}" if rc else "no response code"
        await finish("declined", response)
        raise SignInError(f"host refused the sign-in: {code} ({text})", code)
    try:
        keys = parse_field62(response.binary(62), scheme, key_layout)
    except (KeyError, TypeError, WireError) as exc:
        setting = f"wire.key_layout = {key_layout or 'auto'}"
        reason = "it has no field 62" if isinstance(exc, KeyError) else f"{exc} ({setting})"
        await finish("failed", response, detail=f"field 62: {reason}")
        raise SignInError(f"the 0810 carries no usable working keys: {reason}") from None
    layout = keys.layout
    try:
        await asyncio.to_thread(
            module.load_working_keys, key_slot, layout.number, keys.to_field62()
        )
        status = await asyncio.to_thread(module.key_status, key_slot)
    except ModuleError as exc:  # a KCV mismatch among them: the row is closed, never pending
        await finish("failed", response, detail=f"card module: {exc}")
        raise
    for name, kcv in keys.kcvs().items():
        held = status[name]
        if held.kcv_hex != kcv or held.length != layout.key_length(name):
            detail = (
                f"module holds a {held.length}-byte {name} with KCV {held.kcv_hex}; the host sent "
                f"a {layout.key_length(name)}-byte one with KCV {kcv} ({layout.describe()})"
            )
            await finish("failed", response, detail=detail)
            raise SignInError(detail)
    host_time = response.text(13) + response.text(12) if 12 in response and 13 in response else None
    batch = host_batch(response)
    await finish("completed", response)
    await journal.run(
        journal.record_signin,
        scheme,
        keys.kcvs(),
        host_time,
        terminal.tid,
        terminal.mid,
        batch=batch,
        layout=layout.number,
    )
    log.info("signed in (%s), KCVs %s, batch %s", layout.describe(), keys.kcvs(), batch)
    return SignInResult(
        scheme, layout.number, keys.kcvs(), host_time, batch, response, exchange.endpoint
    )
