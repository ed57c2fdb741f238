"""Sign-in (签到): 0800 -> 0810 -> working keys into the card module -> KCVs checked, journalled."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from agent.journal import Journal
from agent.link import HostLink
from agent.wire import codes
from agent.wire.builders import Terminal, signin_request
from agent.wire.errors import WireError
from agent.wire.message import encode_message
from agent.wire.working_keys import parse_field62
from drivers.module import CardModule

log = logging.getLogger(__name__)


class SignInError(Exception):
    """The sign-in did not give the module working keys; the text says why."""

    def __init__(self, message: str, response_code: str | None = None) -> None:
        super().__init__(message)
        self.response_code = response_code


@dataclass(frozen=True)
class SignInResult:
    scheme: str
    kcvs: dict[str, str]
    host_time: str | None  # MMDDhhmmss from fields 13 and 12


async def sign_in(
    *,
    terminal: Terminal,
    scheme: str,
    key_slot: int,
    journal: Journal,
    module: CardModule,
    link: HostLink,
) -> SignInResult:
    request = signin_request(terminal, stan=journal.next_stan(), batch=journal.batch, scheme=scheme)
    transaction = journal.begin(request, financial=False)
    exchange = await link.request(request, encode_message(request))
    response = exchange.frame.message
    code = response.text(39, "")
    if code != "00":
        rc = codes.lookup(code) if codes.is_code(code) else None
        text = f"{rc.en} / {rc.zh}" if rc else "no response code"
        journal.finish(transaction, "declined", response)
        raise SignInError(f"host refused the sign-in: {code} ({text})", code)
    try:
        keys = parse_field62(response.binary(62), scheme)
    except (KeyError, TypeError, WireError) as exc:
        journal.finish(transaction, "failed", response, detail=f"field 62: {exc}")
        raise SignInError(f"the 0810 carries no usable working keys: {exc}") from None
    await asyncio.to_thread(module.load_working_keys, key_slot, keys.to_field62())
    status = await asyncio.to_thread(module.key_status, key_slot)
    for name, kcv in keys.kcvs().items():
        if status[name].kcv_hex != kcv:
            detail = f"module reports KCV {status[name].kcv_hex} for {name}, the host sent {kcv}"
            journal.finish(transaction, "failed", response, detail=detail)
            raise SignInError(detail)
    host_time = response.text(13) + response.text(12) if 12 in response and 13 in response else None
    journal.finish(transaction, "completed", response)
    journal.record_signin(scheme, keys.kcvs(), host_time, terminal.tid, terminal.mid)
    log.info("signed in (scheme %s), KCVs %s", scheme, keys.kcvs())
    return SignInResult(scheme, keys.kcvs(), host_time)
