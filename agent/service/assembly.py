"""The composition root (DESIGN.md section 13): :class:`Agent` builds the parts from one
configuration in dependency order, gives each what it needs at construction, and owns their
lifecycle in one exit stack, closed in the reverse order (the fleet hears "offline" first, the
journal closes last). It does nothing else: what the parts do is theirs, and nothing calls back
into it. ``agent run``, ``agent signin``, the demo, the tests and the benchmarks all build it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from agent import __version__, paths
from agent.blocking import Gate, Workers
from agent.config import Config
from agent.hook_dispatch import HookDispatch
from agent.host.clock import HostClock
from agent.host.link import HostLink, HostLinkError, LinkOptions
from agent.journal import Journal, JournalError
from agent.keys.tmk_download import TmkDownloader
from agent.recovery.engine import AskedByTheHost, Recovery
from agent.recovery.incident import HostIncident
from agent.recovery.remedies import RemedyFailed, TerminalRemedies
from agent.registration.a2 import TusnSource
from agent.registration.location import Location
from agent.service.status import StatusView
from agent.session.downloads import DownloadFailed
from agent.session.host_session import (
    HostSession,
    RequirementFailed,
    echo_maker,
    host_down_recorder,
)
from agent.session.requirements import Heard, HostRequests, Pacing, RequirementQueue
from agent.session.store import ParameterStore
from agent.settings import Settings
from agent.telemetry import events, ids
from agent.telemetry.reports import LatestReport
from agent.transaction.app_socket import AppSocket
from agent.transaction.deferred import DeferredWrites
from agent.transaction.macs import Macs
from agent.transaction.module_proxy import ModuleProxy
from agent.transaction.passthrough import PassThrough
from agent.transaction.reversals import ReversalSender
from agent.transaction.sender import WORKERS, Sender
from agent.transaction.stan_map import StanMap
from agent.transaction.stats import GatewayStats
from agent.transaction.wrap import WrapMode
from drivers.loading import open_module
from drivers.module import CardModule, ModuleSettings


def open_journal(
    config: Config,
    telemetry_ids: ids.HighWater,
    terminal: Callable[[], tuple[str, str]] | None = None,
) -> Journal:
    """The service's journal: a damaged one set aside (DESIGN.md section 8), its events for the
    fleet put in the telemetry outbox when a broker is configured, with the TID and MID of
    ``terminal()`` (the configuration's when not given)."""
    broker = config.telemetry.broker
    terminal = terminal or (lambda: (config.terminal.tid, config.terminal.mid))
    return Journal.open_for_service(
        paths.journal_path(config),
        forward=events.forwarder(terminal) if broker else None,
        outbox_max=config.telemetry.outbox_max,
        outbox_ids_above=telemetry_ids.event_id if broker else 0,
    )


class Agent:
    def __init__(self, config: Config, module: CardModule | None = None) -> None:
        self._stack = contextlib.AsyncExitStack()
        close = self._stack.push_async_callback
        self.settings = settings = Settings(config)
        telemetry = config.telemetry
        # the highest event id and seq the fleet saw, kept beside the journal: a journal moved
        # aside does not make the ids start again
        self.telemetry_ids = ids.HighWater.beside(paths.journal_path(config))
        self.journal = journal = open_journal(
            config, self.telemetry_ids, lambda: (settings().terminal.tid, settings().terminal.mid)
        )
        self._stack.callback(journal.close)
        self.module = module or open_module(
            config.module.driver,
            ModuleSettings(url=config.module.url, baudrate=config.module.baudrate),
        )
        close(asyncio.to_thread, self.module.close)
        self.host_clock = HostClock()
        self.echo_message = echo_maker(settings, journal)
        # every answer on the link feeds the queue of what the host asks (wrap mode owns the
        # session; in pass-through the app keeps its own)
        requirements = RequirementQueue(lambda: Pacing.of(settings().session))
        wraps = config.gateway.mode != "pass-through"
        self.link = link = HostLink(
            LinkOptions.from_config(config),
            make_echo=self.echo_message,
            on_response=Heard(self.host_clock.saw, requirements if wraps else None),
            on_down=host_down_recorder(journal),
        )
        close(link.close)
        self.stats = stats = GatewayStats()
        macs = Macs(
            self.module, lambda: settings().module.key_slot, lambda: settings().wire.profile
        )
        close(asyncio.to_thread, macs.close)  # after the workers, whose steps wait for it
        deferred = DeferredWrites(journal)
        self.reversals = reversals = ReversalSender(
            journal,
            link,
            macs,
            stats,
            deferred,
            recheck_after=lambda: settings().reversal.recheck_after,
            attempts=lambda: settings().reversal.attempts,
        )
        link.on_unmatched = reversals.late_response  # the sink of unmatched answers
        close(reversals.close)
        close(deferred.close)  # before the reversals' close: what it writes may judge one
        stan_map = StanMap(journal, reversals, lambda: settings().gateway.replay_window)
        self.hooks = hooks = HookDispatch(settings, journal)
        self.tusn = TusnSource(self.module, lambda: settings().registration, __version__[:8])
        self.location = Location(
            hooks.ask, lambda: settings().registration, lambda: settings().hooks.timeout
        )
        close(self.location.close)
        workers = Workers(WORKERS, "pos-agent-worker")
        close(asyncio.to_thread, workers.close)
        tmk = TmkDownloader(settings, journal, self.module, link)
        self.sender = sender = Sender(settings, journal, link, macs, reversals, stan_map, stats,
                                      deferred, self.tusn, self.location, workers, hooks.tell,
                                      tmk.tag_loader)  # fmt: skip
        self.reports = LatestReport()
        self.remedies = remedies = TerminalRemedies(
            settings,
            journal,
            self.module,
            sender,
            link,
            hooks,
            self.host_clock.sample,
            tmk,
            self.reports.put if telemetry.enabled else None,
        )
        close(remedies.close)
        # requests and download steps wait at the gate while a recovery runs
        gate = Gate(lambda: settings().recovery.deadline)
        self.session = session = HostSession(
            settings,
            journal,
            link,
            self.module,
            ParameterStore(paths.parameters_path(config)),
            hooks,
            gate.settled,
        )
        self.downloads = session.downloads
        self.incident = HostIncident()  # announced by the fleet (telemetry), or an operator
        self.recovery = recovery = Recovery(
            remedies,
            journal,
            sender.attempt,
            settings=lambda: settings().recovery,
            gate=gate,
            incident=self.incident,
        )
        sender.on_signed_in = recovery.signed_in  # any sign-in ends the unregistered state
        self.host_requests = HostRequests(
            requirements,
            session.actions(AskedByTheHost(recovery)),
            journal,
            failures=(DownloadFailed, RemedyFailed, RequirementFailed, HostLinkError,
                      JournalError, OSError),
        )  # fmt: skip
        self.status = StatusView(settings, journal, link, sender, recovery, stats)
        # the mode is a setting that takes effect at restart
        mode: WrapMode | PassThrough
        if config.gateway.mode == "pass-through":
            mode = PassThrough(journal, link, lambda: settings().wire.profile, stats)
        else:
            mode = WrapMode(sender, recovery, lambda: settings().wire.profile, stats,
                            session.downloads.observe)  # fmt: skip
        self.module_proxy = ModuleProxy(
            self.module,
            config.gateway.max_clients,
            journal=journal,
            pin_per_minute=lambda: settings().module.pin_per_minute,
        )
        close(self.module_proxy.close)
        self.app_socket = AppSocket(
            mode,
            stats,
            max_clients=config.gateway.max_clients,
            idle_timeout=config.gateway.idle_timeout,
        )
        close(self.app_socket.wait_closed)
        close(self.app_socket.close)
        close(recovery.close)
        self.host_requests.start()
        close(self.host_requests.close)
        close(hooks.close)

    @property
    def config(self) -> Config:
        """The configuration in effect."""
        return self.settings()

    async def close(self) -> None:
        await self._stack.aclose()
