"""Remote master-key download (DESIGN.md section 18): a remedy for a module whose master key (TMK)
is absent, or is not the host's (the module refuses the working keys of a sign-in the host
approved with a KCV mismatch). Where the acquirer offers one (``keys.tmk_download``), the agent
fetches the TMK encrypted under the module's transport key, hands it to the module (LOAD_TMK,
which stores it only if its KCV matches), then signs in. The clear TMK never exists outside the
module: the agent carries the ciphertext and the KCV, and only the KCV is ever journalled,
logged or reported.

The forms:

- ``"0800-401"``: an 0800 with 11, 41, 42 and 60 = ``00`` + batch + ``401``, numbered and
  journalled like a download step; the 0810's field 62 is the ciphertext (16 bytes) and the
  KCV (4 bytes).
- ``"signin-tag00"``: the host puts the same 20 bytes as tag ``00`` before the working keys in
  field 62 of the sign-in's 0810. The byte form: one tag byte ``0x00``, the ciphertext (16), the
  KCV (4), then the working keys laid out as usual (DESIGN.md section 4). No layout is 21 bytes
  longer than another of the same scheme, so the length says whether the tag is there
  (:func:`split_tag00`). The host sends it in "the 0810 of the first sign-in", whichever
  sign-in that is (the start-up's, the app's): in this form any sign-in loads a tag 00 whose
  KCV is not the module's master key's, as a download (once per period; a host that sends the
  same key with every sign-in costs one KEY_STATUS, no LOAD_TMK). In any other form the tag is
  taken out and ignored.
- ``"tms"``: ``GET <tms.url>/tmk/<module serial>`` answers ``{"tmk": hex, "kcv": hex}``.

A download is tried at most once per ``keys.tmk_download_every`` seconds, a failed try
included: the time of the last try is a journal fact, written before the try, so a crash or a
restart loop does not download again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent import messages
from agent.config import Config, KeysConfig
from agent.journal import PATIENCE, JournalError, boot_id, uptime
from agent.wire import codes
from agent.wire.builders import Terminal
from agent.wire.errors import WireError
from agent.wire.working_keys import key_layout, layouts_of
from drivers.module import (
    KCV_BYTES,
    TMK_CIPHERTEXT_BYTES,
    CardModule,
    Command,
    ModuleError,
    ModuleStatusError,
    Status,
)

if TYPE_CHECKING:
    from agent.host.link import HostLink
    from agent.journal import Journal
    from agent.messages import Text
    from agent.selfcheck.base import Context

log = logging.getLogger(__name__)

FORMS = ("0800-401", "signin-tag00", "tms")
DOWNLOAD_CODE = "401"  # 60.3 of the 0800 that asks for the master key
TAG00 = 0x00
WRAPPED_BYTES = TMK_CIPHERTEXT_BYTES + KCV_BYTES
LAST_TRY = "tmk_download_at"  # journal fact: when the last download was tried (epoch seconds)
# and in which boot, at what uptime ("<boot id> <seconds>"): a fact of its own, so that an
# earlier version (an update rolled back) still reads the first
LAST_TRY_BOOT = "tmk_download_boot"
EVENT = "tmk-download"  # journal event: form, outcome, KCV, detail; never the ciphertext


class TmkDownloadFailed(Exception):
    """The master key could not be had or loaded; the text says why. ``silent``: the host did
    not answer, a communication failure rather than a refusal."""

    def __init__(self, message: str, silent: bool = False) -> None:
        super().__init__(message)
        self.silent = silent


@dataclass(frozen=True)
class WrappedTmk:
    """A master key under the module's transport key and the KCV of the clear key. ``repr``
    shows the KCV only."""

    ciphertext: bytes = field(repr=False)
    kcv: bytes

    @property
    def kcv_hex(self) -> str:
        return self.kcv.hex().upper()

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> WrappedTmk:
        """Ciphertext 16 and KCV 4, as field 62 of 0810/401 and tag 00 carry them."""
        if len(data) != WRAPPED_BYTES:
            raise TmkDownloadFailed(
                f"{source} carries {len(data)} bytes, expected {WRAPPED_BYTES} (the master key "
                f"under the transport key, {TMK_CIPHERTEXT_BYTES}, and its KCV, {KCV_BYTES})"
            )
        return cls(data[:TMK_CIPHERTEXT_BYTES], data[TMK_CIPHERTEXT_BYTES:])

    @classmethod
    def from_record(cls, record: Any, source: str) -> WrappedTmk:
        """The TMS's ``{"tmk": hex, "kcv": hex}``."""
        try:
            ciphertext, kcv = bytes.fromhex(record["tmk"]), bytes.fromhex(record["kcv"])
        except (KeyError, TypeError, ValueError):
            raise TmkDownloadFailed(f'{source} did not answer {{"tmk": hex, "kcv": hex}}') from None
        return cls.from_bytes(ciphertext + kcv, source)


# loads the master key of a tag 00 (if it is not the module's already: whether it did)
TagLoader = Callable[[WrappedTmk], Awaitable[bool]]


def split_tag00(field62: bytes, scheme: str, forced: int = 0) -> tuple[WrappedTmk | None, bytes]:
    """Field 62 of a sign-in's 0810 as (the master key of tag 00, if there, the working keys).
    The tag is there when field 62 starts with ``0x00`` and is 21 bytes longer than a layout of
    ``scheme`` (``forced``: that layout only); anything else is returned whole."""
    try:
        layouts = [key_layout(forced)] if forced else layouts_of(scheme)
    except WireError:
        return None, field62  # the working keys' own parsing says what is wrong
    tagged = {1 + WRAPPED_BYTES + layout.length for layout in layouts}
    if len(field62) not in tagged or field62[0] != TAG00:
        return None, field62
    wrapped = field62[1 : 1 + WRAPPED_BYTES]
    return WrappedTmk.from_bytes(wrapped, "tag 00"), field62[1 + WRAPPED_BYTES :]


@dataclass(frozen=True)
class Tried:
    """When a download was tried: the wall clock, and the boot and its uptime (an older
    version's record has the wall clock only)."""

    at: float
    boot: str = ""
    uptime: float | None = None

    @classmethod
    def now(cls) -> Tried:
        return cls(time.time(), boot_id(), uptime())

    @classmethod
    def parse(cls, at: str, boot: str | None) -> Tried:
        """From the journal's two facts (``boot`` None: an earlier version's try, or one
        whose boot could not be written); raises ValueError when they are not such."""
        if boot is None:
            return cls(float(at))
        boot_id, since_boot = boot.split()
        return cls(float(at), boot_id, float(since_boot))

    async def remember(self, journal: Journal) -> None:
        """Into ``journal``: the boot first, so that a try is never taken for one of another
        boot's (a failure between the two leaves the earlier time, the try not made)."""
        await journal.run(journal.remember, LAST_TRY_BOOT, f"{self.boot} {self.uptime!r}")
        await journal.run(journal.remember, LAST_TRY, repr(self.at))


def download_due(keys: KeysConfig, tried: Tried | None, now: Tried) -> bool:
    """Whether a download may be tried ``now``: one is configured and none was tried (failed
    or not) within ``keys.tmk_download_every``. Within one boot that is measured on the uptime,
    which a step of the wall clock does not move (the sync-clock remedy steps it); across boots
    on the wall clock, a last try in its future taken for long ago (a clock wrong then)."""
    if keys.tmk_download not in FORMS:
        return False
    if tried is None:
        return True
    if tried.boot == now.boot and tried.uptime is not None and now.uptime is not None:
        return now.uptime - tried.uptime >= keys.tmk_download_every
    return not 0 <= now.at - tried.at < keys.tmk_download_every


async def last_try(journal: Journal) -> Tried | None:
    """When the last download was tried, from the journal; None when never (or unreadable)."""
    try:
        at = await journal.within(PATIENCE, journal.recall, LAST_TRY)
        if at is None:
            return None
        return Tried.parse(at, await journal.within(PATIENCE, journal.recall, LAST_TRY_BOOT))
    except (JournalError, ValueError):
        return None


async def tmk_absent_remedy(context: Context) -> Text | None:
    """What the self-check's ``keys.tmk-absent`` says to do: nothing, where the agent will
    download the key itself; else a person must have it injected."""
    keys = context.config.keys
    tried = await last_try(context.journal) if context.journal is not None else None
    if download_due(keys, tried, Tried.now()):
        return messages.remedy("keys.tmk-absent:download", source=keys.tmk_download)
    return messages.remedy("keys.tmk-absent")


def keys_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is the module refusing the working keys of a sign-in: LOAD_WORKING_KEYS
    ``04`` (they were made under another master key than the module's) or ``03`` (the slot has
    no master key at all). Either way the remote master-key download is the repair (DESIGN.md
    section 18: no TMK, or the module refusing an approved sign-in's keys)."""
    return (
        isinstance(exc, ModuleStatusError)
        and exc.command is Command.LOAD_WORKING_KEYS
        and exc.status in (Status.KCV_MISMATCH, Status.KEY_ABSENT)
    )


def load_failure(exc: ModuleError, tmk: WrappedTmk) -> str:
    """What a failed LOAD_TMK means, precisely (DESIGN.md section 5)."""
    status = exc.status if isinstance(exc, ModuleStatusError) else None
    if status == Status.KEY_ABSENT:
        return (
            "the card module has no transport key to decrypt the master key with (LOAD_TMK "
            "status 03): it cannot take a remote key; the manufacturer must inject one"
        )
    if status == Status.KCV_MISMATCH:
        return (
            f"the card module refused the master key: it does not decrypt to a key with KCV "
            f"{tmk.kcv_hex} (LOAD_TMK status 04); the key in the slot is unchanged. The "
            f"acquirer sent a wrong KCV, or a key under another transport key"
        )
    return f"the card module did not load the master key: {exc}"


class TmkDownloader:
    """The download as a remedy: :meth:`due` says whether it may run, :meth:`download` runs it
    in the configured form and ends in the sign-in it is given."""

    def __init__(
        self,
        settings: Callable[[], Config],
        journal: Journal,
        module: CardModule,
        link: HostLink,
    ) -> None:
        self._settings = settings
        self._journal = journal
        self._module = module
        self._link = link

    async def due(self) -> bool:
        return download_due(self._settings().keys, await last_try(self._journal), Tried.now())

    def tag_loader(self) -> TagLoader | None:
        """What a sign-in outside this remedy does with a tag 00 in its 0810, where the
        acquirer's form is ``signin-tag00``: a key that is not the module's is loaded, as a
        download (at most once per ``keys.tmk_download_every``, the try journalled); one the
        module does not take leaves the sign-in to go on under the module's own key (whose
        working keys the module then refuses: recovery's, with its download). None (the tag is
        ignored) in any other form."""
        if self._settings().keys.tmk_download != "signin-tag00":
            return None
        return self._load_unasked

    async def _load_unasked(self, tmk: WrappedTmk) -> bool:
        try:
            if await self._holds(tmk) or not await self.due():
                return False
            await Tried.now().remember(self._journal)
            await self._load("signin-tag00", tmk)
        except (TmkDownloadFailed, JournalError) as exc:  # the load's failure is recorded
            log.warning("the master key of a sign-in's tag 00 was not loaded: %s", exc)
            return False
        return True

    async def _holds(self, tmk: WrappedTmk) -> bool:
        """Whether the module's master key is ``tmk`` already (its KCV)."""
        slot = self._settings().module.key_slot
        try:
            held = (await asyncio.to_thread(self._module.key_status, slot)).keys.get("TMK")
        except ModuleError as exc:
            why = f"the card module's master key cannot be read: {exc}"
            self._record("signin-tag00", "failed", tmk.kcv_hex, why)
            raise TmkDownloadFailed(why) from None
        return held is not None and held.present and held.kcv == tmk.kcv

    async def download(self, sign_in: Callable[[TagLoader | None], Awaitable[str]]) -> str:
        """Fetch the master key, load it, then ``sign_in`` (given the tag 00 loader in the
        ``signin-tag00`` form, where the sign-in brings the key). Returns what was done; raises
        :class:`TmkDownloadFailed`, or whatever ``sign_in`` raises."""
        form = self._settings().keys.tmk_download
        if form not in FORMS:
            raise TmkDownloadFailed("no master-key download is configured (keys.tmk_download)")
        try:  # before the try: a crash or a restart loop must not download again
            await Tried.now().remember(self._journal)
        except JournalError as exc:
            raise TmkDownloadFailed(f"the journal cannot record the try: {exc}") from None
        if form == "signin-tag00":
            return await self._by_sign_in(sign_in)
        try:
            tmk = await (self._by_0800_401() if form == "0800-401" else self._by_tms())
        except TmkDownloadFailed as exc:
            self._record(form, "failed", "", str(exc))
            raise
        await self._load(form, tmk)
        return f"master key (KCV {tmk.kcv_hex}) loaded ({form}); {await sign_in(None)}"

    async def _by_sign_in(self, sign_in: Callable[[TagLoader | None], Awaitable[str]]) -> str:
        loaded: list[WrappedTmk] = []

        async def load(tmk: WrappedTmk) -> bool:
            if await self._holds(tmk):
                return False
            await self._load("signin-tag00", tmk)
            loaded.append(tmk)
            return True

        try:
            signed = await sign_in(load)
        except Exception as exc:
            if not loaded:  # a failure of the load itself is recorded already
                self._record("signin-tag00", "failed", "", f"no master key loaded: {exc}")
            raise
        if not loaded:  # the keys loaded under the module's own TMK: nothing was missing
            self._record("signin-tag00", "not-sent", "", "the 0810 carried no new tag 00")
            return f"the sign-in brought no new master key (tag 00); {signed}"
        return f"master key (KCV {loaded[0].kcv_hex}) loaded from tag 00; {signed}"

    async def _by_0800_401(self) -> WrappedTmk:
        from agent.host.link import HostLinkError
        from agent.host.numbered import send_numbered

        config = self._settings()
        terminal = Terminal(config.terminal.tid, config.terminal.mid)
        try:
            answer = await send_numbered(self._journal, self._link, "0800", terminal, DOWNLOAD_CODE)
        except HostLinkError as exc:
            raise TmkDownloadFailed(f"0800/401 got no answer: {exc}", silent=True) from None
        code = answer.text(39, "")
        if code != "00":
            meaning = codes.lookup(code).en if codes.is_code(code) else "no response code"
            raise TmkDownloadFailed(f"the host refused the master-key download (0800/401): "
                                    f"{code} ({meaning})")  # fmt: skip
        field62 = answer.get(62)
        if not isinstance(field62, bytes):
            raise TmkDownloadFailed("the host's 0810/401 carries no field 62")
        return WrappedTmk.from_bytes(field62, "field 62 of the 0810/401")

    async def _by_tms(self) -> WrappedTmk:
        from agent.provisioning import ProvisioningError, tms_get

        tms = self._settings().tms
        if not tms.url:
            raise TmkDownloadFailed("no TMS configured (tms.url)")
        try:
            serial = (await asyncio.to_thread(self._module.info)).serial.strip()
            record = await tms_get(tms.url, "tmk", serial, tms.timeout)
        except ModuleError as exc:
            raise TmkDownloadFailed(f"the module serial is unknown: {exc}") from None
        except ProvisioningError as exc:
            raise TmkDownloadFailed(str(exc)) from None
        return WrappedTmk.from_record(record, f"TMS {tms.url}")

    async def _load(self, form: str, tmk: WrappedTmk) -> None:
        """LOAD_TMK into the configured slot, in the family the slot has (an SM4 TMK's KCV is
        SM4's); recorded either way."""
        slot = self._settings().module.key_slot
        try:
            family = (await asyncio.to_thread(self._module.key_status, slot)).family
            await asyncio.to_thread(self._module.load_tmk, slot, family, tmk.ciphertext, tmk.kcv)
        except ModuleError as exc:
            why = load_failure(exc, tmk)
            self._record(form, "failed", tmk.kcv_hex, why)
            raise TmkDownloadFailed(why) from None
        self._record(form, "loaded", tmk.kcv_hex, f"slot {slot}, {family.name}")

    def _record(self, form: str, outcome: str, kcv: str, detail: str) -> None:
        """Journal (and log) one download: the KCV only, never the ciphertext or a key."""
        self._journal.note(EVENT, form=form, outcome=outcome, kcv=kcv, detail=detail)
        level = logging.INFO if outcome == "loaded" else logging.WARNING
        log.log(level, "master-key download (%s) %s%s: %s", form, outcome,
                f", KCV {kcv}" if kcv else "", detail)  # fmt: skip
