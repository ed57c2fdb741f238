"""The host-session glue (DESIGN.md sections 4 and 16): what the agent's own messages to the host
are made of, and what an answer sets in motion. The echo test of an idle link; each step of a
download chain numbered, journalled and sent once recovery has settled; the status upload's
field 62; the table of what the agent does for each processing requirement of the header."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agent.config import Config, Endpoint
from agent.hook_dispatch import HookDispatch
from agent.host.link import HostLink
from agent.host.numbered import send_numbered
from agent.journal import Journal
from agent.keys.family import RULES
from agent.session.downloads import DownloadFailed, Downloads
from agent.session.requirements import Action
from agent.session.store import ParameterStore
from agent.wire.builders import Terminal, echo_request
from agent.wire.message import Message
from drivers.module import CardModule, KeyFamily, ModuleError

log = logging.getLogger(__name__)


class RequirementFailed(Exception):
    """What the host asked for could not be done; the text says why."""


class SessionRemedies(Protocol):
    """The remedies a processing requirement may call for (3 sign in, 6 re-provision)."""

    async def sign_in(self) -> str: ...
    async def provision(self, reason: str) -> str: ...


def terminal_of(config: Config) -> Terminal:
    return Terminal(config.terminal.tid, config.terminal.mid)


def echo_maker(
    settings: Callable[[], Config], journal: Journal
) -> Callable[[], Awaitable[Message]]:
    """The idle link's echo test (0820/301), numbered by the journal."""

    async def echo() -> Message:
        stan = await journal.run(journal.next_stan)
        return echo_request(terminal_of(settings()), stan=stan, batch=journal.batch)

    return echo


def host_down_recorder(journal: Journal) -> Callable[[Endpoint, str], None]:
    """What the link calls when it marks an endpoint down: the journal keeps it."""

    def record(endpoint: Endpoint, reason: str) -> None:
        journal.note("host-down", endpoint=str(endpoint), reason=reason)

    return record


class HostSession:
    def __init__(
        self,
        settings: Callable[[], Config],
        journal: Journal,
        link: HostLink,
        module: CardModule,
        store: ParameterStore,
        hooks: HookDispatch,
        settled: Callable[[], Awaitable[None]],
    ) -> None:
        """``settled`` waits for a recovery or the start-up sign-in to end: a download step
        must not go out under keys or a TID about to change."""
        self._settings = settings
        self._journal = journal
        self._link = link
        self._module = module
        self._hooks = hooks
        self._settled = settled
        self.downloads = Downloads(
            self._network_request,
            store,
            journal,
            status=self._status_upload,
            downloaded=self._parameters_downloaded,
            parameter_overrides=lambda: self._settings().wire.profile.parameters,
        )

    def actions(self, remedies: SessionRemedies) -> dict[int, Action]:
        """What the agent does for each processing requirement of DESIGN.md section 4."""
        downloads = self.downloads
        return {
            1: Action("terminal parameters (0800/360)", downloads.terminal_parameters),
            2: Action("a status upload (0820/362)", downloads.status_upload),
            3: Action("a sign-in", remedies.sign_in, retried=False),
            4: Action(
                "CA public keys (0820/372, 0800/370, 0800/371; on a 国密 terminal the SM2 ones, "
                "0820/373, 0800/373, too)",
                self._ca_keys,
            ),
            5: Action("IC parameters (0820/382, 0800/380, 0800/381)", downloads.ic_parameters),
            6: Action(
                "a TMS parameter download (re-provisioning)",
                lambda: remedies.provision("the host asked for a TMS parameter download (6)"),
                retried=False,
            ),
            7: Action(
                "the card BIN blacklist (parameters-requested hook)",
                lambda: self._parameters_requested(7, "card BIN blacklist"),
                retried=False,
            ),
            8: Action(
                "currency and fee rates (parameters-requested hook)",
                lambda: self._parameters_requested(8, "currency and fee rates"),
                retried=False,
            ),
            9: Action("contactless parameters (0800/394)", downloads.contactless),
        }

    async def _ca_keys(self) -> str:
        """The CA keys; on a 国密 terminal (signed in last with an SM4 scheme) the SM2 CA keys
        too, which its EMV kernel checks 国密 cards with (DESIGN.md section 16)."""
        done = await self.downloads.ca_keys()
        last = await self._journal.run(self._journal.last_signin)
        if last is None or last["scheme"] not in RULES[KeyFamily.SM4].schemes:
            return done
        try:
            return f"{done}; {await self.downloads.sm2_ca_keys()}"
        except DownloadFailed as exc:
            # a host without 国密 CA keys (it refuses 0820/373): the others are in, and the
            # requirement is met; asking again at each answer would fetch them all again
            self._journal.note("download-failed", chain="sm2_ca_keys", reason=str(exc))
            log.warning("the SM2 CA keys were not downloaded: %s", exc)
            return f"{done}; SM2 CA keys not downloaded: {exc}"

    async def _network_request(self, mti: str, code: str, field62: bytes | None) -> Message:
        """One step of a download: numbered, journalled, sent; the host's answer."""
        await self._settled()
        terminal = terminal_of(self._settings())
        return await send_numbered(self._journal, self._link, mti, terminal, code, field62)

    async def _status_upload(self) -> bytes:
        """Field 62 of 0820/362 (DESIGN.md section 16): the devices, then the terminal
        parameters of the last download as they decode under the profile in effect (a store
        written by an older agent, or under another profile, is read again, not resent blindly).
        The PIN pad is the card module: working if it answers INFO and is not tampered (then it
        has erased its keys). The keyboard, card reader, printer and display belong to the
        payment app, which the agent cannot see: reported working. The module's serial and
        firmware and the agent's version go to telemetry, not here."""
        from agent.session import parameters  # as the downloads do: not loaded at start

        try:
            info = await asyncio.to_thread(self._module.info)
            pin_pad = not info.tampered
        except ModuleError:
            pin_pad = False
        devices = {name: True for _, name in parameters.STATUS_DEVICES} | {"pin_pad": pin_pad}
        downloaded = self.downloads.store.in_use().get("terminal", {}).get("raw", "")
        overrides = self._settings().wire.profile.parameters
        return parameters.status_field(devices, bytes.fromhex(downloaded), overrides)

    async def _parameters_downloaded(self, section: str, summary: dict[str, Any]) -> None:
        path = str(self.downloads.store.path)
        identity = self._settings().terminal.identity()
        payload = {**identity, "section": section, "path": path, **summary}
        self._hooks.tell("parameters-downloaded", payload)

    async def _parameters_requested(self, requirement: int, what: str) -> str:
        """Requirements 7 and 8 are acquirer-specific: a vendor's hook does them."""
        payload = {**self._settings().terminal.identity(), "requirement": requirement, "what": what}
        results = await self._hooks.ask("parameters-requested", payload, self._hooks.timeout)
        if any(r.done for r in results):
            return f"parameters-requested hook did the {what}"
        raise RequirementFailed(
            f"no parameters-requested hook did the {what}: "
            + ("; ".join(f"{r.hook}: {r.detail}" for r in results) or "none installed")
        )
