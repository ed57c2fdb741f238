"""Sign-in (签到): 0800 -> 0810 -> working keys into the card module -> KCVs checked, journalled.

The host's batch number (60.2 of the 0810) becomes the terminal's: a host that checks it answers
77 to requests of any other batch.

Hosts accept a subset of the sign-in schemes (60.3; DESIGN.md section 4): a posp_server-style
host lists only 004 and 006 and answers anything else 40. With ``wire.key_scheme = "auto"`` the
agent negotiates: it tries the schemes of the module's key family in order, starting with the one
the journal kept from the last approved sign-in, moves on when the host answers 40, 12 or 30, and
keeps the first the host approves. A configured scheme is used alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field

from agent.host.link import HostLink, HostLinkError
from agent.journal import Journal
from agent.keys.family import rules_of
from agent.keys.tmk_download import TagLoader, TmkDownloadFailed, split_tag00
from agent.wire import codes
from agent.wire.builders import Terminal, signin_request
from agent.wire.errors import WireError
from agent.wire.message import Message
from agent.wire.working_keys import parse_field62
from drivers.module import CardModule, KeyFamily, ModuleError

log = logging.getLogger(__name__)


class SignInError(Exception):
    """The sign-in did not give the module working keys; the text says why. ``refused`` maps
    each scheme the host refused on the way to its answer (field 39), in the order tried;
    ``response_code`` is the last answer's."""

    def __init__(
        self,
        message: str,
        response_code: str | None = None,
        refused: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.response_code = response_code
        self.refused = dict(refused or {})


class SchemeRefused(SignInError):
    """The host answered 40, 12 or 30 to a sign-in: it does not take that scheme, another may
    do (``wire.key_scheme = "auto"`` tries the next)."""


@dataclass(frozen=True)
class SignInResult:
    """What a sign-in got: the scheme and layout approved, the keys' KCVs, the host's time."""

    scheme: str
    layout: int
    kcvs: dict[str, str]
    host_time: str | None  # MMDDhhmmss from fields 13 and 12
    batch: int | None  # the host's, from 60.2 of the 0810
    response: Message  # the host's 0810 (field 62 is key material: only the module gets it)
    endpoint: str  # HOST:PORT of the host that signed the terminal in
    # the schemes the host refused before it approved this one, with its answers (field 39)
    refused: dict[str, str] = field(default_factory=dict)


def host_batch(response: Message) -> int | None:
    """60.2 of an 0810, when the host sent one."""
    value = response.get(60)
    if isinstance(value, str) and len(value) >= 8 and value[2:8].isdigit():
        return int(value[2:8])
    return None


def family_schemes(family: KeyFamily | str) -> tuple[str, ...]:
    """The sign-in schemes ``wire.key_scheme = "auto"`` tries for a TMK of ``family``, in order
    (DESIGN.md sections 4 and 18: DES 003, 004; SM4 006), as the family table says."""
    try:
        return rules_of(family).schemes
    except ValueError:
        raise SignInError(f"no sign-in scheme is known for a {family} master key") from None


def negotiation_order(family_order: tuple[str, ...], kept: str | None) -> tuple[str, ...]:
    """The schemes to try: the one kept from the last approved sign-in first, then the family's
    order (a kept scheme the host now refuses starts negotiation again; none is tried twice)."""
    if kept not in family_order:  # none kept yet, or kept under another family
        return family_order
    return (kept, *(scheme for scheme in family_order if scheme != kept))


def moves_on(code: str) -> bool:
    """Whether a refusal of a sign-in means "not this scheme": 40 (function not supported), 12
    (invalid transaction) and 30 (format error) are what hosts answer to a 60.3 they do not
    take. Any other refusal is about the terminal, not the scheme, and ends the sign-in."""
    return code in ("40", "12", "30")


def refusal(refused: dict[str, str], kind: type[SignInError] = SignInError) -> SignInError:
    """The error of a sign-in the host refused: its answer to each scheme tried, in order; the
    last answer's code is the error's (recovery acts on it)."""

    def answer(code: str) -> str:
        rc = codes.lookup(code) if codes.is_code(code) else None
        return f"{code} ({rc.en} / {rc.zh})" if rc else f"{code} (no response code)"

    answers = "; ".join(f"{answer(code)} to scheme {scheme}" for scheme, code in refused.items())
    return kind(f"host refused the sign-in: {answers}", list(refused.values())[-1], refused)


async def sign_in(
    *,
    terminal: Terminal,
    scheme: str,
    key_layout: int,
    key_slot: int,
    family: KeyFamily,
    journal: Journal,
    module: CardModule,
    link: HostLink,
    tmk_tag: TagLoader | None = None,
) -> SignInResult:
    """Sign in with ``scheme``, or with ``"auto"`` negotiate it among the schemes of ``family``,
    the slot's (see the module's text). ``tmk_tag`` loads a master key the 0810 carries as tag
    00 (DESIGN.md section 18) before its working keys; without it the tag is left out. Every
    0800 is a journal row of its own. Raises :class:`SignInError` (the host refused, or its keys
    are unusable), :class:`HostLinkError` or :class:`ModuleError`; only a 40, 12 or 30 to a
    negotiated scheme moves on to the next."""
    negotiating = scheme == "auto"
    if negotiating:
        kept = await journal.run(journal.recall, "key_scheme")
        schemes = negotiation_order(family_schemes(family), kept)
    else:
        schemes = (scheme,)
    refused: dict[str, str] = {}
    for tried in schemes:
        try:
            result = await sign_in_with(
                tried, refused, terminal=terminal, key_layout=key_layout, key_slot=key_slot,
                journal=journal, module=module, link=link, tmk_tag=tmk_tag,
            )  # fmt: skip
        except SchemeRefused as exc:
            refused[tried] = exc.response_code or ""
            log.info("%s", exc)
            continue
        except SignInError as exc:
            if refused and exc.response_code:  # the schemes refused before are part of why
                raise refusal({**refused, tried: exc.response_code}) from None
            if negotiating and exc.response_code is None:  # approved: its keys failed, not it
                await journal.run(journal.remember, "key_scheme", tried)
            raise
        except ModuleError:
            # the host approved the scheme and the module refused its keys (a master key not
            # the host's): the repair signs in with it at once
            if negotiating:
                await journal.run(journal.remember, "key_scheme", tried)
            raise
        if negotiating:
            await journal.run(journal.remember, "key_scheme", tried)
        return result
    raise refusal(refused)


async def sign_in_with(
    scheme: str,
    refused: dict[str, str],
    *,
    terminal: Terminal,
    key_layout: int,
    key_slot: int,
    journal: Journal,
    module: CardModule,
    link: HostLink,
    tmk_tag: TagLoader | None = None,
) -> SignInResult:
    """One 0800 with ``scheme``; ``refused`` (the schemes the host refused before it, with its
    answers) is journalled with a success. :class:`SchemeRefused` for a 40, 12 or 30."""
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
        await finish("declined", response)
        raise refusal({scheme: code}, SchemeRefused if moves_on(code) else SignInError)
    try:
        tmk, field62 = split_tag00(response.binary(62), scheme, key_layout)
        keys = parse_field62(field62, scheme, key_layout)
    except (KeyError, TypeError, WireError) as exc:
        setting = f"wire.key_layout = {key_layout or 'auto'}"
        reason = "it has no field 62" if isinstance(exc, KeyError) else f"{exc} ({setting})"
        await finish("failed", response, detail=f"field 62: {reason}")
        raise SignInError(f"the 0810 carries no usable working keys: {reason}") from None
    if tmk is not None and tmk_tag is not None:  # the master key first: the keys are under it
        try:
            await tmk_tag(tmk)
        except TmkDownloadFailed as exc:
            await finish("failed", response, detail=f"tag 00: {exc}")
            raise SignInError(f"the master key of tag 00 was not loaded: {exc}") from None
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
        refused=refused,
    )
    log.info("signed in (%s), KCVs %s, batch %s", layout.describe(), keys.kcvs(), batch)
    return SignInResult(
        scheme, layout.number, keys.kcvs(), host_time, batch, response, exchange.endpoint,
        dict(refused),
    )  # fmt: skip
