"""The :class:`Agent`: journal, card module, host link, the transaction layer, recovery and hooks,
built from one configuration, each part given what it needs at construction, and the remedies
recovery applies to them. ``agent run``, ``agent signin`` and the demo all assemble it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from agent import __version__, paths, provisioning
from agent.config import Config, Endpoint
from agent.host.link import HostLink, HostLinkError
from agent.host.signin import SignInError
from agent.journal import Journal, JournalError
from agent.provisioning import Provisioning, ProvisioningError
from agent.recovery.engine import Recovery
from agent.recovery.policy import State, refused
from agent.recovery.remedies import HostSilent, RemedyFailed
from agent.selfcheck import FAST, Report, run_checks
from agent.selfcheck.base import Context, HostClockSample
from agent.selfcheck.report import as_json
from agent.session import parameters
from agent.session.downloads import DownloadFailed, Downloads
from agent.session.requirements import Action, HostRequests, Pacing
from agent.session.store import ParameterStore
from agent.telemetry import events
from agent.telemetry.reporter import Reporter
from agent.transaction.app_socket import AppSocket
from agent.transaction.deferred import DeferredWrites
from agent.transaction.macs import Macs
from agent.transaction.module_proxy import ModuleProxy
from agent.transaction.passthrough import PassThrough
from agent.transaction.reversals import ReversalSender
from agent.transaction.sender import Sender
from agent.transaction.stan_map import StanMap
from agent.transaction.stats import GatewayStats
from agent.transaction.wrap import WrapMode
from agent.wire.builders import Terminal, download_request, echo_request
from agent.wire.message import Message
from agent.wire.profile import Profile
from drivers.module import CardModule, ModuleError
from drivers.serial_module import SerialCardModule
from firmware_hooks import HookResult, HookRunner, Outcome

log = logging.getLogger(__name__)


class AlreadyProvisioned(RemedyFailed):
    """Re-provisioning found what the agent already runs with."""


class Agent:
    def __init__(self, config: Config, module: CardModule | None = None) -> None:
        self.config = config
        telemetry = config.telemetry
        self.journal = Journal.open_for_service(
            paths.journal_path(config),
            forward=events.forward if telemetry.broker else None,
            outbox_max=telemetry.outbox_max,
        )
        self.module = module or SerialCardModule(config.module.url, baudrate=config.module.baudrate)
        self.link = HostLink.from_config(
            config,
            make_echo=self.echo_message,
            on_response=self._saw_response,
            on_down=self._host_down,
        )
        self.hooks = HookRunner(config.hooks.directory, timeout=config.hooks.timeout)
        self._hook_tasks: set[asyncio.Future[None]] = set()
        # hooks that inform run one event after the other, in the order the events happened
        # (a display-message must never overtake the one it replaces)
        self._hooks_in_order = asyncio.Lock()
        self.last_host_time: HostClockSample | None = None
        # the transaction layer reads the configuration in effect (a reload may change it)
        self.stats = GatewayStats()
        macs = Macs(self.module, lambda: self.config.module.key_slot, self._profile)
        deferred = DeferredWrites()
        self.reversals = ReversalSender(
            self.journal,
            self.link,
            macs,
            self.stats,
            deferred,
            recheck_after=lambda: self.config.reversal.recheck_after,
            attempts=lambda: self.config.reversal.attempts,
            terminal=lambda: Terminal(self.config.terminal.tid, self.config.terminal.mid),
        )
        self.link.on_unmatched = self.reversals.late_response
        stan_map = StanMap(self.journal, self.reversals, lambda: self.config.gateway.replay_window)
        self.sender = Sender(
            lambda: self.config,
            self.journal,
            self.link,
            macs,
            self.reversals,
            stan_map,
            self.stats,
            deferred,
        )
        self.downloads = Downloads(
            self._network_request,
            ParameterStore(paths.parameters_path(config)),
            self.journal,
            status=self._status_upload,
            downloaded=self._parameters_downloaded,
        )
        self.host_requests = HostRequests(
            self._host_actions(),
            self.journal,
            self._pacing,
            failures=(DownloadFailed, RemedyFailed, HostLinkError, JournalError, OSError),
        )
        self.recovery = Recovery(
            self,
            self.journal,
            self.sender.attempt,
            attempts=config.recovery.attempts,
            deadline=config.recovery.deadline,
            probe=(config.recovery.probe_first, config.recovery.probe_max),
            host_asks=self.host_requests.asked,
        )
        # the mode is a setting that takes effect at restart
        mode: WrapMode | PassThrough
        if config.gateway.mode == "pass-through":
            mode = PassThrough(self.journal, self.link, self._profile, self.stats)
        else:
            mode = WrapMode(
                self.sender, self.recovery, self._profile, self.stats, self.downloads.observe
            )
        self.app_socket = AppSocket(
            mode,
            self.stats,
            max_clients=config.gateway.max_clients,
            idle_timeout=config.gateway.idle_timeout,
        )
        self.module_proxy = ModuleProxy(
            self.module,
            config.gateway.max_clients,
            journal=self.journal,
            pin_per_minute=lambda: self.config.module.pin_per_minute,
        )
        self.telemetry = (
            Reporter(
                telemetry,
                self.journal,
                self.status,
                serial=self.module_serial,
            )
            if telemetry.enabled
            else None
        )

    def _profile(self) -> Profile:
        return self.config.wire.profile

    def echo_message(self) -> Message:
        terminal = Terminal(self.config.terminal.tid, self.config.terminal.mid)
        return echo_request(terminal, stan=self.journal.next_stan(), batch=self.journal.batch)

    def _host_down(self, endpoint: Endpoint, reason: str) -> None:
        try:
            self.journal.event("host-down", endpoint=str(endpoint), reason=reason)
        except JournalError as exc:
            log.warning("journal: host-down not recorded: %s", exc)

    def _saw_response(self, message: Message) -> None:
        if 12 in message and 13 in message:
            self.last_host_time = HostClockSample(time.time(), message.text(13) + message.text(12))

    async def close(self) -> None:
        if self.telemetry is not None:
            await self.telemetry.close()  # the fleet hears "offline, stopped" first
        for task in self._hook_tasks:
            task.cancel()  # a hook still running is killed with its process group
        await asyncio.gather(*self._hook_tasks, return_exceptions=True)
        await self.host_requests.close()
        await self.recovery.close()
        await self.app_socket.close()
        await self.app_socket.wait_closed()
        await self.module_proxy.close()
        await self.reversals.close()
        await self.link.close()
        await asyncio.to_thread(self.module.close)
        self.journal.close()

    # ------------------------------------------------------------------------ the session

    def _host_actions(self) -> dict[int, Action]:
        """What the agent does for each processing requirement of DESIGN.md section 4."""
        downloads = self.downloads
        return {
            1: Action("terminal parameters (0800/360)", downloads.terminal_parameters),
            2: Action("a status upload (0820/362)", downloads.status_upload),
            3: Action("a sign-in", self.sign_in, retried=False),
            4: Action("CA public keys (0820/372, 0800/370, 0800/371)", downloads.ca_keys),
            5: Action("IC parameters (0820/382, 0800/380, 0800/381)", downloads.ic_parameters),
            6: Action(
                "a TMS parameter download (re-provisioning)",
                lambda: self.provision("the host asked for a TMS parameter download (6)"),
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

    def _pacing(self) -> Pacing:
        session = self.config.session
        return Pacing(
            session.repeat_after, session.attempts, session.retry_first, session.retry_max
        )

    async def _network_request(self, mti: str, code: str, field62: bytes | None) -> Message:
        """One step of a download: numbered, journalled, sent; the host's answer."""
        await self.recovery.settled()  # not under keys or a TID about to change
        terminal = Terminal(self.config.terminal.tid, self.config.terminal.mid)
        request = download_request(
            mti,
            terminal,
            stan=self.journal.next_stan(),
            batch=self.journal.batch,
            code=code,
            field62=field62,
        )
        transaction = self.journal.begin(request, financial=False)
        try:
            exchange = await self.link.request(request)
        except HostLinkError as exc:
            self.journal.finish(transaction, "failed", detail=str(exc))
            raise
        answer = exchange.frame.message
        state = "completed" if answer.text(39, "") == "00" else "declined"
        self.journal.finish(transaction, state, answer)
        return answer

    async def _status_upload(self) -> bytes:
        """Field 62 of 0820/362: the module's state and identity, the software, then the
        terminal parameters in use as they were downloaded."""
        try:
            info = await asyncio.to_thread(self.module.info)
            module = {
                "module_state": "1" if info.tampered else "0",
                "module_serial": info.serial,
                "module_firmware": info.firmware,
            }
        except ModuleError:
            module = {"module_state": "2", "module_serial": "", "module_firmware": ""}
        status = parameters.encode(
            {**module, "software_version": f"pos-agent {__version__}"[:16]},
            parameters.STATUS_TAGS,
        )
        in_use = self.downloads.store.read().get("terminal", {}).get("raw", "")
        return status + bytes.fromhex(in_use)

    async def _parameters_downloaded(self, section: str, summary: dict[str, Any]) -> None:
        path = str(self.downloads.store.path)
        await self.hook(
            "parameters-downloaded",
            {**self.identity(), "section": section, "path": path, **summary},
        )

    async def _parameters_requested(self, requirement: int, what: str) -> str:
        """Requirements 7 and 8 are acquirer-specific: a vendor's hook does them."""
        payload = {**self.identity(), "requirement": requirement, "what": what}
        results = await self.ask_hooks("parameters-requested", payload, self.config.hooks.timeout)
        if any(r.outcome is Outcome.DONE for r in results):
            return f"parameters-requested hook did the {what}"
        raise RemedyFailed(
            f"no parameters-requested hook did the {what}: "
            + ("; ".join(f"{r.hook}: {r.detail}" for r in results) or "none installed")
        )

    # ------------------------------------------------------------------------ configuration

    def apply_config(self, config: Config) -> list[str]:
        """Run with ``config`` from now on (re-provisioning, SIGHUP). Returns what changed.
        Settings that need a restart (module, sockets, journal) are kept and reported."""
        changed = [
            section.name
            for section in dataclasses.fields(config)
            if getattr(config, section.name) != getattr(self.config, section.name)
        ]
        at_restart = [
            name for name in ("gateway", "journal", "control", "telemetry") if name in changed
        ]
        if (config.module.url, config.module.baudrate, config.module.socket) != (
            self.config.module.url,
            self.config.module.baudrate,
            self.config.module.socket,
        ):
            at_restart.append("module.url/baudrate/socket")
        if at_restart:
            log.warning("changed settings take effect at restart: %s", ", ".join(at_restart))
        # what is in effect: the sockets, the journal and the serial port stay as started
        old = self.config
        config = dataclasses.replace(
            config,
            gateway=old.gateway,
            journal=old.journal,
            control=old.control,
            telemetry=old.telemetry,
            module=dataclasses.replace(
                config.module,
                url=old.module.url,
                baudrate=old.module.baudrate,
                socket=old.module.socket,
            ),
        )
        self.config = config
        self.link.reconfigure(HostLink.from_config(config, make_echo=self.echo_message))
        self.hooks = HookRunner(config.hooks.directory, timeout=config.hooks.timeout)
        self.recovery.attempts = config.recovery.attempts
        self.recovery.deadline = config.recovery.deadline
        self.recovery.probe_pauses = (config.recovery.probe_first, config.recovery.probe_max)
        return changed

    def status(self) -> dict[str, Any]:
        """What ``agent status`` shows: state, host, last sign-in, reversal queue, last 97."""
        link = self.link.status
        last = self.journal.last_signin()
        queued, stuck = self.journal.reversal_counts(self.config.reversal.attempts)
        message = self.recovery.message
        state = self.recovery.state.value
        if self.recovery.state is State.REGISTERED and not self.sender.signed_in:
            state = "not-signed-in"  # no sign-in has succeeded since the service started
        return {
            "state": state,
            "registered": state == State.REGISTERED.value,
            "tid": self.config.terminal.tid,
            "mid": self.config.terminal.mid,
            "host": {
                "endpoint": link.endpoint,
                "connected": link.connected,
                "last_error": link.last_error,
                "late_responses": link.late_responses,
            },
            "signed_in": {"at": last["at"], "scheme": last["scheme"], "kcvs": last["kcvs"]}
            if last
            else None,
            "reversals_queued": queued,
            "reversals_stuck": stuck,  # tried reversal.attempts times and still queued
            "reversals_to_recheck": self.journal.rechecks_waiting(),
            "last_refusal": self.recovery.last_refusal,
            "message": message.to_json() if message else None,
            "gateway": dataclasses.asdict(self.stats),
        }

    def identity(self) -> dict[str, str]:
        terminal = self.config.terminal
        return {"tid": terminal.tid, "mid": terminal.mid, "support_phone": terminal.support_phone}

    async def start(self) -> None:
        """Sign in at start, then let queued reversals go (MACed under the keys just loaded).
        A refused sign-in starts recovery: there is no request to retry, only the sign-in."""
        async with self.recovery.busy():  # requests wait for the start-up, repair included
            try:
                await self.sender.sign_in()
            except SignInError as exc:
                log.warning("sign-in at start failed: %s", exc)
                answer = Message("0810", {39: exc.response_code or ""})
                if refused(answer):
                    await self.recovery.recover(None, answer)
            except (HostLinkError, ModuleError, JournalError) as exc:
                log.warning("sign-in at start failed: %s", exc)
        if self.journal.has_queued_reversals:
            self.reversals.waiting.set()

    # ----------------------------------------------------------------------------- remedies

    def check_context(self) -> Context:
        return Context(
            self.config,
            self.journal,
            module=self.module,
            host_clock=self._host_clock,
        )

    def _host_clock(self) -> HostClockSample | None:
        if self.last_host_time is not None:
            return self.last_host_time
        last = self.journal.last_signin()
        if last and last["host_time"]:
            return HostClockSample(last["at"], last["host_time"])
        return None

    async def self_check(self, only: list[str] | None = None) -> Report:
        report = await run_checks(self.check_context(), list(FAST) if only is None else only)
        if only is None and self.telemetry is not None:
            self.telemetry.selftest(as_json(report, "en", self.config.terminal.tid))
        return report

    async def module_serial(self) -> str:
        """The card module's serial (INFO), "" when the module does not answer."""
        try:
            info = await asyncio.wait_for(asyncio.to_thread(self.module.info), 5.0)
        except (ModuleError, TimeoutError, OSError):
            return ""
        return info.serial.strip()

    def signed_in_at(self) -> str:
        return self.sender.signed_in_at

    async def sign_in(self) -> str:
        try:
            await self.sender.sign_in()
        except HostLinkError as exc:
            raise HostSilent(f"sign-in failed: {exc}") from None
        except (SignInError, ModuleError, JournalError) as exc:
            raise RemedyFailed(f"sign-in failed: {exc}") from None
        self.recovery.registered_again("a sign-in succeeded")
        last = self.journal.last_signin() or {}
        signed_in = {**self.identity(), "scheme": last.get("scheme"), "kcvs": last.get("kcvs")}
        await self.hook("signed-in", signed_in)
        return f"signed in as TID {self.config.terminal.tid}, KCVs {last.get('kcvs')}"

    async def provision(self, reason: str) -> str:
        """Ask the TMS, then the ``provision`` hook; apply and keep what they say, then sign in
        under it. Fails when nobody knows better than the configuration already does."""
        found = await self._keeping_an_answering_host(await self._fetch_provisioning(reason))
        current = Provisioning(
            self.config.terminal.tid,
            self.config.terminal.mid,
            tuple(map(str, self.config.endpoints)),
        )
        if (found.tid, found.mid, found.hosts or current.hosts) == (
            current.tid,
            current.mid,
            current.hosts,
        ):
            raise AlreadyProvisioned(f"{found.source} has the provisioning already in use")
        try:
            new_config = found.apply(self.config)
            provisioning.save(paths.provisioning_path(self.config), found)
        except (ProvisioningError, OSError, ValueError) as exc:
            raise RemedyFailed(f"provisioning from {found.source} not applied: {exc}") from None
        changed = self.apply_config(new_config)
        self.journal.event("provisioned", source=found.source, tid=found.tid, changed=changed)
        signed = await self.sign_in()
        return f"provisioned from {found.source} (TID {found.tid}, MID {found.mid}); {signed}"

    async def _keeping_an_answering_host(self, found: Provisioning) -> Provisioning:
        """A remedy never trades the host that answers for hosts that do not (DESIGN.md
        section 7): when the provisioning leaves out the endpoint the terminal talks to now,
        its hosts are taken only if one of them answers an echo test."""
        link = self.link.status
        if not found.hosts or not link.connected or link.endpoint in found.hosts:
            return found
        try:
            offered = found.apply(self.config).endpoints
        except (ProvisioningError, ValueError):
            return found  # refused with its reason when applied
        probe = HostLink.from_config(
            self.config, offered, response_timeout=min(self.config.host.response_timeout, 5.0)
        )
        try:
            await probe.request(self.echo_message())
            return found
        except HostLinkError as exc:
            kept = tuple(map(str, self.config.endpoints))
            log.warning("%s offers hosts %s that do not answer (%s); keeping %s",
                        found.source, ", ".join(found.hosts), exc, ", ".join(kept))  # fmt: skip
            with contextlib.suppress(JournalError):
                self.journal.event("provisioning-hosts-kept", offered=list(found.hosts),
                                   kept=list(kept), reason=str(exc))  # fmt: skip
            return dataclasses.replace(found, hosts=kept)
        finally:
            await probe.close()

    async def provision_by_hand(self) -> str:
        """``agent provision``: nothing to change is a fine answer for a technician."""
        try:
            return await self.provision("requested by a technician")
        except AlreadyProvisioned as exc:
            return f"nothing to change: {exc}"

    async def _fetch_provisioning(self, reason: str) -> Provisioning:
        failures = []
        serial = ""
        try:
            serial = (await asyncio.to_thread(self.module.info)).serial
        except ModuleError as exc:
            failures.append(f"module serial unknown: {exc}")
        if self.config.tms.url and serial:
            try:
                return await provisioning.fetch_from_tms(
                    self.config.tms.url, serial, self.config.tms.timeout
                )
            except ProvisioningError as exc:
                failures.append(str(exc))
        payload = {**self.identity(), "reason": reason, "module_serial": serial.strip()}
        for result in await self.ask_hooks("provision", payload, self.config.hooks.timeout):
            if result.outcome is Outcome.DONE and result.output:
                try:
                    return Provisioning.from_record(result.output, f"hook {result.hook}")
                except ProvisioningError as exc:
                    failures.append(str(exc))
            else:
                failures.append(f"hook {result.hook}: {result.outcome.value} {result.detail}")
        if not self.config.tms.url and not self.hooks.hooks_for("provision"):
            failures.append("no TMS (tms.url) and no provision hook configured")
        raise RemedyFailed("; ".join(failures))

    async def sync_clock(self, clock: dict[str, Any]) -> str:
        """The ``sync-clock`` hook corrects the clock; a sign-in then gives the host our time."""
        results = await self.ask_hooks("sync-clock", clock, self.config.hooks.timeout)
        if any(r.outcome is Outcome.DONE for r in results):
            corrected = f"sync-clock hook corrected {clock.get('offset_seconds')} s"
            return f"{corrected}; {await self.sign_in()}"
        raise RemedyFailed(
            "no sync-clock hook succeeded: "
            + ("; ".join(f"{r.hook}: {r.detail}" for r in results) or "none installed")
        )

    async def fail_over(self) -> str:
        backup = self.config.host.backup
        if backup is None:
            raise RemedyFailed("no backup host configured")
        self.link.prefer(backup)
        return f"now using the backup host {backup}; " + await self.sign_in()

    async def hook(self, event: str, payload: dict[str, Any]) -> None:
        """Tell the hooks of ``event`` in the background: a hook never holds up a payment or a
        recovery (DESIGN.md section 9), however long it takes."""
        task = asyncio.ensure_future(self._tell_hooks(event, payload))
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_tasks.discard)

    async def hooks_told(self) -> None:
        """Until the hooks told so far have finished (tests use it to see what they did)."""
        while self._hook_tasks:
            await asyncio.gather(*self._hook_tasks, return_exceptions=True)

    async def _tell_hooks(self, event: str, payload: dict[str, Any]) -> None:
        try:
            async with self._hooks_in_order:
                await self.ask_hooks(event, payload, budget=None)
        except Exception:  # a hook runner bug must not surface in a payment's task
            log.exception("running the %s hooks failed", event)

    async def ask_hooks(
        self, event: str, payload: dict[str, Any], budget: float | None
    ) -> list[HookResult]:
        """Run the hooks of ``event`` (all within ``budget`` seconds when given); what failed is
        logged, a hook refused for its ownership or mode journalled too."""
        results = await self.hooks.run(event, payload, budget=budget)
        for result in results:
            if result.outcome is Outcome.DONE:
                continue
            log.warning("hook %s for %s: %s", result.hook, event, result.detail)
            if result.detail.startswith("refused:"):
                with contextlib.suppress(JournalError):
                    self.journal.event("hook-refused", hook=result.hook, reason=result.detail)
        return results
