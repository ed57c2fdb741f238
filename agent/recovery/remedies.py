"""What recovery can do to the terminal (DESIGN.md section 7): run the self-check, sign in,
re-provision from the TMS or the ``provision`` hook, have the clock corrected, fail over, download
the master key where the acquirer offers it (DESIGN.md section 18). Each
remedy returns what it did or raises :class:`RemedyFailed` with why; one the host did not answer
raises :class:`HostSilent`, which never makes a terminal unregistered. Recovery is given the
remedies at construction (:class:`Remedies`); :class:`TerminalRemedies` are the real ones."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from agent import paths, provisioning
from agent.config import Config
from agent.hook_dispatch import HookDispatch
from agent.host.clock import HostClockSample
from agent.host.link import HostLink, HostLinkError, LinkOptions
from agent.host.signin import SignInError
from agent.journal import Journal, JournalError
from agent.keys.tmk_download import TagLoader, TmkDownloader, TmkDownloadFailed, keys_refused
from agent.provisioning import Provisioning, ProvisioningError
from agent.session.host_session import echo_maker
from agent.settings import Settings
from agent.transaction.sender import Sender
from drivers.module import CardModule, ModuleError

if TYPE_CHECKING:
    from agent.selfcheck import Report
    from agent.selfcheck.base import Context

log = logging.getLogger(__name__)


class Remedies(Protocol):
    """What recovery can do to the terminal."""

    async def self_check(self) -> Report: ...
    async def sign_in(self) -> str: ...  # each returns what it did; raises RemedyFailed
    async def provision(self, reason: str) -> str: ...
    async def sync_clock(self, clock: dict[str, Any]) -> str: ...
    async def fail_over(self) -> str: ...
    async def download_tmk(self) -> str: ...  # the master key, then a sign-in
    async def tmk_download_due(self) -> bool: ...  # configured, and not tried lately
    def tell_hooks(self, event: str, payload: dict[str, Any]) -> None: ...
    def identity(self) -> dict[str, str]: ...  # tid, mid, support_phone
    def signed_in_at(self) -> str: ...  # HOST:PORT of the last successful sign-in, or ""


class RemedyFailed(Exception):
    """A remedy could not be applied; the text says why."""


class HostSilent(RemedyFailed):
    """A remedy got no answer from the host (a timeout, no connection): a communication
    failure, never a refusal, so never a reason to call the terminal unregistered."""


class KeysRefused(RemedyFailed):
    """The host approved a sign-in but the module refused its working keys (LOAD_WORKING_KEYS
    KCV mismatch): the module's master key is not the host's."""


class SignInRefused(RemedyFailed):
    """The host answered the sign-in with a refusal (``code``)."""

    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.code = code


class AlreadyProvisioned(RemedyFailed):
    """Re-provisioning found what the agent already runs with."""


class TerminalRemedies:
    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        module: CardModule,
        sender: Sender,
        link: HostLink,
        hooks: HookDispatch,
        host_clock: Callable[[], HostClockSample | None],
        tmk: TmkDownloader,
        reports: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """``tmk``: the remote master-key download (DESIGN.md section 18). ``reports`` takes
        each full self-check's report (the fleet's, when telemetry is on)."""
        self._settings = settings
        self._journal = journal
        self._module = module
        self._sender = sender
        self._link = link
        self._hooks = hooks
        self._host_clock = host_clock
        self._reports = reports
        self._tmk = tmk
        self._rest_of_the_check: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------ what it is

    def identity(self) -> dict[str, str]:
        return self._settings().terminal.identity()

    def signed_in_at(self) -> str:
        return self._sender.signed_in_at or ""

    def tell_hooks(self, event: str, payload: dict[str, Any]) -> None:
        self._hooks.tell(event, payload)

    def check_context(self) -> Context:
        # the self-check is imported by its first run: the service starts without its modules
        from agent.selfcheck.base import Context

        return Context(
            self._settings(),
            self._journal,
            module=self._module,
            host_clock=self._host_clock,
            hooks=self._hooks,
        )

    async def self_check(self, only: list[str] | None = None) -> Report:
        """The checks ``only`` names, by default the fast ones recovery runs; after those, where
        telemetry is configured, the others in the background: the fleet's retained report is
        the whole self-check (the watcher judges a terminal healthy by it)."""
        from agent.selfcheck import FAST, run_checks  # imported by the first run, as above

        report = await run_checks(self.check_context(), list(FAST) if only is None else only)
        if only is None and self._reports is not None:
            if self._rest_of_the_check is not None:
                self._rest_of_the_check.cancel()  # this run's is the newer
            self._rest_of_the_check = asyncio.ensure_future(self._report_whole(report))
        return report

    async def _report_whole(self, fast: Report) -> None:
        # only where telemetry is configured: a terminal without it never loads the report
        from agent.selfcheck import Report, checks, run_checks
        from agent.selfcheck.report import as_json

        every = checks()
        rest = await run_checks(self.check_context(), [c for c in every if c not in fast.ids])
        found = {check.id: check for check in (*fast.checks, *rest.checks)}
        whole = Report([found[c] for c in every], fast.duration_ms + rest.duration_ms)
        assert self._reports is not None
        self._reports(as_json(whole, "en", self._settings().terminal.tid))

    async def close(self) -> None:
        if self._rest_of_the_check is not None:
            self._rest_of_the_check.cancel()
            await asyncio.gather(self._rest_of_the_check, return_exceptions=True)

    async def module_serial(self) -> str:
        """The card module's serial (INFO), "" when the module does not answer."""
        try:
            async with asyncio.timeout(5.0):
                info = await asyncio.to_thread(self._module.info)
        except (ModuleError, TimeoutError, OSError):
            return ""
        return info.serial.strip()

    async def module_tusn(self) -> str:
        """The terminal's TUSN as the module's TUSN command gives it, "" when it cannot."""
        try:
            async with asyncio.timeout(5.0):
                answer = await asyncio.to_thread(self._module.tusn, "000000")
        except (ModuleError, TimeoutError, OSError):
            return ""
        return answer.tusn

    # --------------------------------------------------------------------------- remedies

    async def sign_in(self, tmk_tag: TagLoader | None = None) -> str:
        """``tmk_tag``: the master-key download's loader of a tag 00 in the 0810."""
        try:
            result = await self._sender.sign_in(tmk_tag)
        except HostLinkError as exc:
            raise HostSilent(f"sign-in failed: {exc}") from None
        except ModuleError as exc:
            failed = KeysRefused if keys_refused(exc) else RemedyFailed
            raise failed(f"sign-in failed: {exc}") from None
        except SignInError as exc:
            if exc.response_code:
                raise SignInRefused(f"sign-in failed: {exc}", exc.response_code) from None
            raise RemedyFailed(f"sign-in failed: {exc}") from None
        except JournalError as exc:
            raise RemedyFailed(f"sign-in failed: {exc}") from None
        tid = self._settings().terminal.tid
        return f"signed in as TID {tid}, KCVs {result.kcvs}"

    async def provision(self, reason: str) -> str:
        """Ask the TMS, then the ``provision`` hook; apply and keep what they say, then sign in
        under it. Fails when nobody knows better than the configuration already does."""
        config = self._settings()
        found = await self._keeping_an_answering_host(await self._fetch(reason))
        current = Provisioning(
            config.terminal.tid, config.terminal.mid, tuple(map(str, config.endpoints))
        )
        if (found.tid, found.mid, found.hosts or current.hosts) == (
            current.tid,
            current.mid,
            current.hosts,
        ):
            raise AlreadyProvisioned(f"{found.source} has the provisioning already in use")
        try:
            new_config = found.apply(config)
            provisioning.save(paths.provisioning_path(config), found)
        except (ProvisioningError, OSError, ValueError) as exc:
            raise RemedyFailed(f"provisioning from {found.source} not applied: {exc}") from None
        changed = reconfigure(self._settings, self._link, new_config)
        self._journal.note("provisioned", source=found.source, tid=found.tid, changed=changed)
        signed = await self.sign_in()
        return f"provisioned from {found.source} (TID {found.tid}, MID {found.mid}); {signed}"

    async def provision_by_hand(self) -> str:
        """``agent provision``: nothing to change is a fine answer for a technician."""
        try:
            return await self.provision("requested by a technician")
        except AlreadyProvisioned as exc:
            return f"nothing to change: {exc}"

    async def _keeping_an_answering_host(self, found: Provisioning) -> Provisioning:
        """A remedy never trades the host that answers for hosts that do not (DESIGN.md
        section 7): when the provisioning leaves out the endpoint the terminal talks to now,
        its hosts are taken only if one of them answers an echo test."""
        config = self._settings()
        link = self._link.status
        if not found.hosts or not link.connected or link.endpoint in found.hosts:
            return found
        try:
            offered = found.apply(config).endpoints
        except (ProvisioningError, ValueError):
            return found  # refused with its reason when applied
        timeout = min(config.host.response_timeout, 5.0)
        probe = HostLink(LinkOptions.from_config(config, offered, response_timeout=timeout))
        try:
            await probe.request(await echo_maker(self._settings, self._journal)())
            return found
        except HostLinkError as exc:
            kept = tuple(map(str, config.endpoints))
            log.warning("%s offers hosts %s that do not answer (%s); keeping %s",
                        found.source, ", ".join(found.hosts), exc, ", ".join(kept))  # fmt: skip
            self._journal.note("provisioning-hosts-kept", offered=list(found.hosts),
                               kept=list(kept), reason=str(exc))  # fmt: skip
            return dataclasses.replace(found, hosts=kept)
        finally:
            await probe.close()

    async def _fetch(self, reason: str) -> Provisioning:
        config = self._settings()
        failures = []
        serial = ""
        try:
            serial = (await asyncio.to_thread(self._module.info)).serial
        except ModuleError as exc:
            failures.append(f"module serial unknown: {exc}")
        if config.tms.url and serial:
            try:
                return await provisioning.fetch_from_tms(config.tms.url, serial, config.tms.timeout)
            except ProvisioningError as exc:
                failures.append(str(exc))
        payload = {**self.identity(), "reason": reason, "module_serial": serial.strip()}
        for result in await self._hooks.ask("provision", payload, self._hooks.timeout):
            if result.done and result.output:
                try:
                    return Provisioning.from_record(result.output, f"hook {result.hook}")
                except ProvisioningError as exc:
                    failures.append(str(exc))
            else:
                failures.append(f"hook {result.hook}: {result.outcome.value} {result.detail}")
        if not config.tms.url and not self._hooks.runner.hooks_for("provision"):
            failures.append("no TMS (tms.url) and no provision hook configured")
        raise RemedyFailed("; ".join(failures))

    async def sync_clock(self, clock: dict[str, Any]) -> str:
        """The ``sync-clock`` hook corrects the clock; a sign-in then gives the host our time."""
        results = await self._hooks.ask("sync-clock", clock, self._hooks.timeout)
        if any(r.done for r in results):
            corrected = f"sync-clock hook corrected {clock.get('offset_seconds')} s"
            return f"{corrected}; {await self.sign_in()}"
        raise RemedyFailed(
            "no sync-clock hook succeeded: "
            + ("; ".join(f"{r.hook}: {r.detail}" for r in results) or "none installed")
        )

    async def tmk_download_due(self) -> bool:
        return await self._tmk.due()

    async def download_tmk(self) -> str:
        try:
            return await self._tmk.download(self.sign_in)
        except TmkDownloadFailed as exc:
            failed = HostSilent if exc.silent else RemedyFailed
            raise failed(f"master-key download failed: {exc}") from None

    async def fail_over(self) -> str:
        backup = self._settings().host.backup
        if backup is None:
            raise RemedyFailed("no backup host configured")
        self._link.prefer(backup)
        return f"now using the backup host {backup}; " + await self.sign_in()


def reconfigure(settings: Settings, link: HostLink, config: Config) -> list[str]:
    """Run with ``config`` (a reload): the settings replaced whole, the link given its new
    options. Returns the sections that changed."""
    changed = settings.replace(config)
    link.reconfigure(LinkOptions.from_config(settings()))
    return changed
