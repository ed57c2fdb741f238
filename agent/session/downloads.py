"""The CUP download chains of DESIGN.md section 16, run by the agent when the host's header asks
(or a technician does), and the same results taken from the chains a payment app runs itself.

Each chain collects everything first and replaces its section of the
:class:`~agent.session.store.ParameterStore` only once the host has answered every step; a chain
that fails keeps the data in use. Messages go through ``send`` (the service numbers, journals and
frames them), so this module knows nothing of the link. The decoders (:mod:`.parameters`,
:mod:`.emv`) are imported by the first chain that needs one: a service whose host asks for no
download, and whose app runs none, never loads them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.journal import Journal
from agent.session import tlv
from agent.session.store import ParameterStore
from agent.wire.errors import WireError
from agent.wire.message import Message
from agent.wire.profile import ParameterTable

log = logging.getLogger(__name__)

# 60.3 network management codes of the downloads
TERMINAL_PARAMETERS = "360"
STATUS_UPLOAD = "362"
CA_KEY_LIST, CA_KEY, CA_KEYS_END = "372", "370", "371"
SM2_CA_KEY_LIST = SM2_CA_KEY = "373"  # 国密 CA keys: 0820/373 lists them, 0800/373 brings each
IC_PARAMETER_LIST, IC_PARAMETERS, IC_PARAMETERS_END = "382", "380", "381"
CONTACTLESS = "394"
MAX_PARTS = 50  # a list that has not ended after this many answers never will
MAX_ITEMS = 100  # CA keys or AIDs an app's chain may bring: more is a chain that never ends
# (mti, 60.3 code, field 62 or None) -> the host's answer
Send = Callable[[str, str, bytes | None], Awaitable[Message]]
# (section, summary) once a section has been replaced: the ``parameters-downloaded`` hook
Downloaded = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class AppChain:
    """What a payment app's own CA key or IC parameter chain has brought so far: ``listed``
    when its list was seen from the first part."""

    listed: bool
    items: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0


# The app's list chains, by (MTI, 60.3) of each step: the list's first part starts one, a
# key's or AID's answer brings an item, and the end commits it (0800/371 ends either CA key
# chain: the kind of the last step seen)
_LISTS = {
    ("0820", CA_KEY_LIST): "ca_keys",
    ("0820", SM2_CA_KEY_LIST): "sm2_ca_keys",
    ("0820", IC_PARAMETER_LIST): "ic_parameters",
}
_ITEMS = {
    ("0800", CA_KEY): "ca_keys",
    ("0800", SM2_CA_KEY): "sm2_ca_keys",
    ("0800", IC_PARAMETERS): "ic_parameters",
}
_ENDS = {("0800", CA_KEYS_END): "ca_keys", ("0800", IC_PARAMETERS_END): "ic_parameters"}
_CA_KEYS = ("ca_keys", "sm2_ca_keys")  # the two chains 0800/371 ends: the one in progress


class DownloadFailed(Exception):
    """A chain did not complete; the text names the step and why."""


class Downloads:
    def __init__(
        self,
        send: Send,
        store: ParameterStore,
        journal: Journal,
        *,
        status: Callable[[], Awaitable[bytes]],
        downloaded: Downloaded,
        parameter_overrides: Callable[[], ParameterTable] = dict,
    ) -> None:
        """``parameter_overrides``: the ``[parameters]`` of the wire profile in effect, asked at
        each decoding (the configuration may have been reloaded since)."""
        self._send = send
        self.store = store
        self._journal = journal
        self._status = status
        self._downloaded = downloaded
        self._parameter_overrides = parameter_overrides
        # what a payment app's own CA key / IC parameter chain has brought so far
        self._app_chain: dict[str, AppChain] = {}
        self._app_ca_keys = "ca_keys"  # the CA key kind of the app's last step of such a chain

    async def _ask(self, mti: str, code: str, field62: bytes | None = None) -> bytes:
        """Field 62 of the host's approval of one step; anything else fails the chain."""
        answer = await self._send(mti, code, field62)
        result = answer.text(39, "")
        if result != "00":
            raise DownloadFailed(f"the host answered {result or 'no code'} to {mti}/{code}")
        value = answer.get(62, b"")
        return value if isinstance(value, bytes) else value.encode("latin-1")

    async def _commit(self, section: str, content: dict[str, Any], summary: dict[str, Any]) -> str:
        self.store.replace(section, content)
        self._journal.note("parameters-downloaded", section=section, **summary)
        await self._downloaded(section, summary)
        return f"{section}: " + ", ".join(f"{k} {v}" for k, v in summary.items())

    @staticmethod
    def _parsed(step: str, parse: Callable[[], Any]) -> Any:
        try:
            return parse()
        except WireError as exc:
            raise DownloadFailed(f"{step}: {exc}") from None

    # ------------------------------------------------------------------------ the chains

    def _terminal(self, data: bytes, by: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The store's terminal section and the summary of a 0810/360's field 62. What could
        not be decoded is kept raw with the reason, and the chain still completes: the values
        before it are right, and a guess after it could not be."""
        from agent.session import parameters

        decoded = parameters.decode(data, self._parameter_overrides())
        summary: dict[str, Any] = {"values": len(decoded["values"])}
        if decoded["reason"]:
            log.warning("0810/360: kept raw from there on: %s", decoded["reason"])
            summary["kept_raw"] = decoded["reason"]
        if by:
            summary["by"] = by
        return {**decoded, "raw": data.hex().upper()}, summary

    async def terminal_parameters(self) -> str:
        data = await self._ask("0800", TERMINAL_PARAMETERS)
        if not data:  # an approval without the table: the table in use stays
            raise DownloadFailed("0810/360: approved without parameters (no field 62)")
        return await self._commit("terminal", *self._terminal(data, by=""))

    async def status_upload(self) -> str:
        field62 = await self._status()
        await self._ask("0820", STATUS_UPLOAD, field62)
        return await self._commit(
            "status_upload", {"sent": field62.hex().upper()}, {"bytes": len(field62)}
        )

    async def _listing(self, code: str) -> list[list[tuple[str, bytes]]]:
        """Every entry of a paged list (0820/372 or 382: ``1`` + the 2-digit start index)."""
        from agent.session import emv

        entries: list[list[tuple[str, bytes]]] = []
        for _ in range(MAX_PARTS):
            start = f"1{len(entries) % 100:02d}".encode("ascii")
            data = await self._ask("0820", code, start)
            more, part = self._parsed(f"0820/{code}", lambda data=data: emv.list_part(data))
            if more and not part:
                raise DownloadFailed(f"0820/{code}: the host says more follows but sent nothing")
            if part and all(entry in entries for entry in part):
                # a host that ignores the start index sends its first part again and again
                raise DownloadFailed(
                    f"0820/{code}: the part from entry {len(entries)} repeats entries listed "
                    "already (the host ignores the start index)"
                )
            entries += part
            if not more:
                return entries
            if len(entries) >= MAX_ITEMS:  # no chain asks for more; a 2-digit index ends at 99
                log.warning("0820/%s lists more than %d entries; the first are kept", code,
                            MAX_ITEMS)  # fmt: skip
                return entries[:MAX_ITEMS]
        raise DownloadFailed(f"0820/{code}: the list did not end after {MAX_PARTS} answers")

    async def ca_keys(self) -> str:
        """The CA key chain (DESIGN.md section 16): 0820/372, 0800/370 per key, 0800/371."""
        return await self._ca_key_chain(CA_KEY_LIST, CA_KEY, "ca_keys")

    async def sm2_ca_keys(self) -> str:
        """The 国密 (SM2) CA key chain, the same way with 0820/373 and 0800/373 (section 16),
        ended by 0800/371 as the other."""
        return await self._ca_key_chain(SM2_CA_KEY_LIST, SM2_CA_KEY, "sm2_ca_keys")

    async def _ca_key_chain(self, list_code: str, key_code: str, section: str) -> str:
        """A key whose DF03 is not its hash, or that is not the key asked for, is refused alone
        and journalled; the others are kept and the chain still ends with 0800/371. At most
        ``MAX_ITEMS`` keys are asked for."""
        from agent.session import emv

        keys: list[dict[str, Any]] = []
        refusals: list[str] = []
        listed = await self._listing(list_code)
        if len(listed) > MAX_ITEMS:
            log.warning("0820/%s lists %d CA keys; the first %d are asked", list_code,
                        len(listed), MAX_ITEMS)  # fmt: skip
        for entry in listed[:MAX_ITEMS]:
            wanted = dict(entry)
            if emv.RID not in wanted or emv.INDEX not in wanted:
                raise DownloadFailed(f"0820/{list_code}: a listed CA key lacks its RID or index")
            named = f"{wanted[emv.RID].hex().upper()}/{wanted[emv.INDEX].hex().upper()}"
            asked = tlv.encode_all([(emv.RID, wanted[emv.RID]), (emv.INDEX, wanted[emv.INDEX])])
            data = await self._ask("0800", key_code, asked)
            try:
                key = emv.ca_key(emv.one_item(data))
                if f"{key.rid}/{key.index}" != named:
                    raise emv.DownloadDataError(
                        f"asked for CA key {named}, got {key.rid}/{key.index}"
                    )
            except WireError as exc:
                refusals.append(str(exc))
                log.warning("0800/%s: CA key %s refused: %s", key_code, named, exc)
                self._journal.note("ca-key-refused", key=named, reason=str(exc))
                continue
            keys.append(key.to_json())
        # the chain ends so whatever was kept: the host's answer to it goes on (its header may
        # ask for the IC parameters next)
        await self._ask("0800", CA_KEYS_END)
        if refusals and not keys:  # nothing good came: the keys in use stay
            raise DownloadFailed(f"0800/{key_code}: {refusals[0]}")
        summary = {"keys": len(keys), **({"refused": len(refusals)} if refusals else {})}
        return await self._commit(section, {"keys": keys}, summary)

    async def ic_parameters(self) -> str:
        from agent.session import emv

        aids = []
        for entry in await self._listing(IC_PARAMETER_LIST):
            wanted = dict(entry)
            if emv.AID not in wanted:
                raise DownloadFailed("0820/382: a listed entry lacks its AID (9F06)")
            data = await self._ask("0800", IC_PARAMETERS, tlv.encode(emv.AID, wanted[emv.AID]))
            aids.append(
                self._parsed("0800/380", lambda data=data: emv.aid_parameters(emv.one_item(data)))
            )
        await self._ask("0800", IC_PARAMETERS_END)
        return await self._commit("ic_parameters", {"aids": aids}, {"aids": len(aids)})

    async def contactless(self) -> str:
        from agent.session import emv

        data = await self._ask("0800", CONTACTLESS)
        tags = self._parsed("0800/394", lambda: emv.contactless(data))
        return await self._commit("contactless", {"tags": tags}, {"tags": len(tags)})

    # ---------------------------------------------------------- the payment app's own chains

    async def observe(self, request: Message, answer: Message) -> None:
        """A download the app ran itself went through the agent: keep what it brought, the same
        way (a section is replaced once the app's chain has ended with an approval)."""
        code = str(request.get(60, ""))[8:11]
        step = (request.mti, code)
        field62 = answer.get(62, b"")
        section = _LISTS.get(step) or _ITEMS.get(step)
        if section in _CA_KEYS:
            self._app_ca_keys = section
        if step in _LISTS and request.get(62) == b"100":
            # the first part of a list: a new chain, nothing of an abandoned one carries over
            # (of either CA key kind: one such chain at a time, which 0800/371 ends)
            started = _LISTS[step]
            for abandoned in _CA_KEYS if started in _CA_KEYS else (started,):
                self._app_chain.pop(abandoned, None)
            self._app_chain[started] = AppChain(listed=True)
        if answer.text(39, "") != "00" or not isinstance(field62, bytes):
            return
        try:
            if code == TERMINAL_PARAMETERS and field62:  # one without the table keeps ours
                await self._commit("terminal", *self._terminal(field62, by="app"))
            elif code == CONTACTLESS:
                from agent.session import emv

                tags = emv.contactless(field62)
                await self._commit("contactless", {"tags": tags}, {"tags": len(tags), "by": "app"})
            elif step in _ITEMS:
                from agent.session import emv

                item = (
                    emv.aid_parameters(emv.one_item(field62))
                    if code == IC_PARAMETERS
                    else emv.ca_key(emv.one_item(field62)).to_json()
                )
                chain = self._app_chain.setdefault(_ITEMS[step], AppChain(listed=False))
                chain.items.append(item)
                del chain.items[:-MAX_ITEMS]
            elif step in _ENDS:
                ended = _ENDS[step]
                if ended == "ca_keys":
                    ended = self._app_ca_keys
                    for abandoned in _CA_KEYS:
                        if abandoned != ended:
                            self._app_chain.pop(abandoned, None)
                await self._app_chain_ended(ended)
        except WireError as exc:
            # the app's EMV kernel gets the answer as it is; the agent keeps nothing of it, and
            # a key or AID refused is refused alone: the rest of its chain is kept (section 16)
            log.warning("the app's download %s brought data the agent refuses: %s", code, exc)
            self._journal.note("download-refused", code=code, by="app", reason=str(exc))
            if step in _ITEMS:
                self._app_chain.setdefault(_ITEMS[step], AppChain(listed=False)).refused += 1

    async def _app_chain_ended(self, section: str) -> None:
        """The app's chain of ``section`` ended: what it kept replaces the data in use, one
        entry per key or AID (a step the app repeated counts once, the last kept). A chain
        that kept nothing replaces nothing, unless it was whole (its list seen from the
        start) and refused nothing: the keys in use are not traded for a chain whose every key
        was refused, or whose steps the agent did not see (section 16)."""
        chain = self._app_chain.pop(section, AppChain(listed=False))
        unique = {(item.get("rid"), item.get("index"), item.get("aid")): item
                  for item in chain.items}  # fmt: skip
        items = list(unique.values())
        key = "aids" if section == "ic_parameters" else "keys"
        if not items and (chain.refused or not chain.listed):
            why = f"{chain.refused} refused" if chain.refused else "no step of it seen"
            log.warning("the app's %s chain ended with nothing kept (%s): the %s in use stay",
                        section, why, key)  # fmt: skip
            self._journal.note("download-kept", section=section, by="app", reason=why)
            return
        await self._commit(section, {key: items}, {key: len(items), "by": "app"})
