"""``agent run``: the agent as a long-running process under systemd.

It serves the payment and control sockets, signs in, sends queued reversals until the host confirms
them, runs a light self-check now and then, tells systemd how it is (READY, STATUS, WATCHDOG when
``NOTIFY_SOCKET`` is set), reloads its configuration on SIGHUP, and on SIGTERM stops taking new
requests, lets those in flight finish, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import paths, stages, timeline
from agent.backoff import Backoff
from agent.config import Config, ConfigError
from agent.host.link import HostLinkError
from agent.host.signin import SignInError
from agent.journal import JournalError
from agent.provisioning import ProvisioningError
from agent.recovery.policy import State
from agent.recovery.remedies import RemedyFailed, reconfigure
from agent.service import cpu
from agent.service.assembly import Agent
from agent.service.control import ControlServer, Handler
from agent.service.instance import InstanceLock
from agent.service.notify import Notifier
from agent.service.without_journal import JournalUnusable, until_the_journal_opens
from agent.transaction.peers import QuietLog
from agent.transaction.reversals import ReversalPending, ReversalRefused
from drivers.module import ModuleError

if TYPE_CHECKING:
    from agent.telemetry.commands import Operation
    from agent.telemetry.reporter import Reporter

log = logging.getLogger(__name__)

REVERSAL_FIRST_PAUSE = 1.0  # then growing to reversal.retry_max while the host refuses
DRAIN_TIMEOUT = 35.0
LIGHT_CHECKS = ["keys", "module", "storage"]
# the entries the control socket's journal command gives at most (about 0.5 MB: the answer is
# one line, built in memory): the newest, or the oldest from --since on; the rest are counted
JOURNAL_ENTRIES = 2_000


SUPERVISE_FIRST, SUPERVISE_MAX = 1.0, 60.0


async def supervised(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run a background loop for the life of the service: one that fails unexpectedly is
    logged with its traceback and started again after a pause that grows while it keeps
    failing (a dead reversal sender would hold customers' money silently)."""
    backoff = Backoff(SUPERVISE_FIRST, SUPERVISE_MAX)
    while True:
        started = asyncio.get_running_loop().time()
        try:
            await loop()
            return
        except Exception:
            if asyncio.get_running_loop().time() - started > SUPERVISE_MAX:
                backoff.succeeded()  # it had been running well: a new failure, not a loop
            pause = backoff.failed()
            log.exception("background task %s failed; starting it again in %.1f s", name, pause)
        await asyncio.sleep(pause)


async def send_reversals_until_done(agent: Agent) -> None:
    """For the life of the agent: whenever reversals are queued, send them, backing off while
    the host does not confirm; the ``reversal-stuck`` hook hears of one that keeps failing."""
    reversals = agent.reversals
    backoff: Backoff | None = None  # while tries keep failing
    stuck_told: set[int] = set()  # the reversals told of as stuck since the start
    while True:
        await reversals.waiting.wait()
        try:
            await reversals.send()
        except (ReversalRefused, ReversalPending) as exc:
            backoff = backoff or Backoff(REVERSAL_FIRST_PAUSE, agent.config.reversal.retry_max)
            if isinstance(exc, ReversalRefused):
                # the host lost the session or the keys: recover (sign in, re-provision...) as
                # for a refused sign-in; the reversal then goes again, after a pause while the
                # host keeps refusing. Within a recovery, the running recovery is the repair.
                log.warning("%s: recovering first", exc)
                if agent.recovery.state is State.REGISTERED:
                    await agent.recovery.recover(None, exc.answer)
            pause = backoff.failed()
            log.warning("reversal not confirmed yet (%s); next attempt in %.1f s", exc, pause)
            await tell_stuck(agent, stuck_told, str(exc))
            await asyncio.sleep(pause)
            continue
        backoff = None
        if not agent.journal.has_queued_reversals:
            reversals.waiting.clear()


async def tell_stuck(agent: Agent, told: set[int], last_error: str) -> None:
    """The reversals tried ``reversal.attempts`` times (refused, unanswered or unconfirmed
    alike), each told once to the journal, the fleet and the ``reversal-stuck`` hooks (also
    when a sale's try took it there, or past it); ``told`` keeps which were, and forgets those
    closed since."""
    limit = agent.config.reversal.attempts
    try:
        queued = await agent.journal.run(agent.journal.queued_reversals)
    except JournalError as exc:
        log.warning("reversals: %s", exc)
        return
    stuck = [r for r in queued if r.attempts >= limit and r.id not in told]
    told.intersection_update(r.id for r in queued)  # closed ones: forgotten
    told.update(r.id for r in stuck)
    for reversal in stuck:
        detail = {"stan": reversal.message.text(11), "attempts": reversal.attempts,
                  "reason": reversal.reason, "last_error": last_error}  # fmt: skip
        agent.journal.note("reversal-stuck", **detail)  # the fleet hears of it (14)
        agent.hooks.tell("reversal-stuck", detail)


RECHECK_IDLE = 60.0  # seconds between looks when rechecks are off (some may be due from before)


async def recheck_reversals(agent: Agent) -> None:
    """For the life of the agent: send again, once, each reversal the host closed as "nothing
    to reverse" when its recheck is due (``reversal.recheck_after``)."""
    while True:
        period = agent.config.reversal.recheck_after or RECHECK_IDLE
        try:
            due_in = await agent.journal.run(agent.journal.recheck_in)
            if due_in is not None and due_in <= 0:
                await agent.reversals.recheck()
                continue
        except JournalError as exc:
            log.warning("reversal recheck: %s", exc)
            due_in = None
        # a reversal closed from now on is due a whole period later: sleeping at most that
        # long, a recheck is never later than twice the period
        wait = period if due_in is None else min(period, due_in)
        await asyncio.sleep(max(wait, REVERSAL_FIRST_PAUSE))


JOURNAL_UPKEEP = 60.0  # seconds between retention runs, each when no transaction is in flight


async def journal_upkeep(agent: Agent, interval: float = JOURNAL_UPKEEP) -> None:
    """Retention, the size cap and a WAL checkpoint (DESIGN.md section 8), at start and then
    whenever the payment path is idle, in a worker thread."""
    while True:
        await agent.sender.write_outcomes()  # space may have come back with no sale noticing
        if not agent.app_socket.busy:
            settings = agent.config.journal
            try:
                # a worker of its own: the journal's thread stays free for sales between steps
                deleted = await asyncio.to_thread(
                    agent.journal.prune, settings.keep_days, int(settings.max_mb * 2**20)
                )
            except JournalError as exc:
                log.warning("journal upkeep failed: %s", exc)
            else:
                if deleted:
                    log.info("journal retention deleted %d settled transaction(s)", deleted)
        await asyncio.sleep(interval)


LIGHT_CHECKS_OFF = 60.0  # seconds between looks at selftest.interval while it is 0 (off)


async def light_checks(agent: Agent) -> None:
    """Every ``selftest.interval`` seconds (read each time: a reload may change it; 0 is off):
    keys, module and storage. A finding that changes is journalled; keys that are no longer
    the session's get a sign-in before a purchase finds out."""
    previous: dict[str, str] = {}
    while True:
        interval = agent.config.selftest.interval
        await asyncio.sleep(interval or LIGHT_CHECKS_OFF)
        if not agent.config.selftest.interval:
            continue
        report = await agent.remedies.self_check(LIGHT_CHECKS)
        from agent.selfcheck.base import Status  # loaded by that first check, not at start

        for check in report.checks:
            said = f"{check.status.value}: {check.summary.en}"
            before, previous[check.id] = previous.get(check.id), said
            if said != before and (before is not None or check.status is not Status.OK):
                agent.journal.note("light-check", check=check.id, finding=check.finding,
                                   result=said)  # fmt: skip
        keys = report.get("keys")
        # stale keys, or no master key at all (the sign-in's keys refused: its download)
        if keys is not None and keys.finding in ("keys-absent", "kcv-mismatch", "tmk-absent"):
            with contextlib.suppress(RemedyFailed):
                await agent.recovery.sign_in(
                    "the light check found stale keys", within_incident=True
                )


async def feed_watchdog(notify: Notifier, agent: Agent) -> None:
    """WATCHDOG=1 from the event loop itself: a loop that hangs stops feeding, and systemd
    restarts the service."""
    while True:
        notify("WATCHDOG=1", f"STATUS={agent.status.line()}")
        await asyncio.sleep(notify.watchdog_interval)


async def announce_state(notify: Notifier, agent: Agent) -> None:
    """STATUS= as soon as the state changes (a recovery starts or ends), not only with the next
    watchdog ping. Until the first sign-in the line is looked at each second (that sign-in is
    no change of recovery's state); from then on only a change wakes this: an idle agent has no
    wake-up of its own."""
    shown = ""
    while True:
        line = agent.status.line()
        if line != shown:
            notify(f"STATUS={line}")
            shown = line
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0 if not agent.sender.signed_in else None):
                await agent.recovery.state_changed()


def control_handlers(agent: Agent) -> dict[str, Handler]:
    async def status(_: dict[str, Any]) -> dict[str, Any]:
        return await agent.status()

    async def selftest(request: dict[str, Any]) -> dict[str, Any]:
        from agent.selfcheck import asked, run_checks  # imported by the first check

        report = await run_checks(agent.remedies.check_context(), asked(request.get("only")))
        return {
            "duration_ms": report.duration_ms,
            "checks": [check.to_json() for check in report.checks],
        }

    async def signin(_: dict[str, Any]) -> dict[str, Any]:
        return {"result": await agent.recovery.sign_in("a technician's sign-in succeeded")}

    async def provision(_: dict[str, Any]) -> dict[str, Any]:
        return {"result": await agent.remedies.provision_by_hand()}

    async def echo(_: dict[str, Any]) -> dict[str, Any]:
        message = await agent.echo_message()
        started = time.monotonic()
        exchange = await agent.link.request(message)
        return {
            "response_code": exchange.frame.message.text(39, "??"),
            "ms": round((time.monotonic() - started) * 1000, 1),
            "host": agent.link.status.endpoint,
        }

    async def journal(request: dict[str, Any]) -> dict[str, Any]:
        since = request.get("since", 0)
        if isinstance(since, bool) or not isinstance(since, int | float):
            raise ValueError('"since" must be epoch seconds')
        journal = agent.journal

        def part() -> tuple[list[dict[str, Any]], int]:
            # without a start the newest; from a start on, the oldest from there: the next
            # part begins where one ends
            shown = timeline.entries(journal, float(since), JOURNAL_ENTRIES, newest=not since)
            return shown, journal.count_since(float(since)) - len(shown)

        entries, left_out = await journal.run(part)
        return {"entries": entries, "left_out": left_out}

    async def params(_: dict[str, Any]) -> dict[str, Any]:
        return {"parameters": agent.downloads.store.read()}

    async def stage_times(_: dict[str, Any]) -> dict[str, Any]:
        return stages.summary()  # empty unless POS_AGENT_STAGES=1 (a benchmark's run)

    return {"status": status, "selftest": selftest, "signin": signin, "provision": provision,
            "echo": echo, "journal": journal, "params": params, "stages": stage_times}  # fmt: skip


JOURNAL_COMMAND_MAX = 100  # entries an operator's ``journal`` command may ask for


def operator_commands(agent: Agent, handlers: dict[str, Handler]) -> dict[str, Operation]:
    """What the fleet's operators may ask over MQTT (DESIGN.md section 14): the technician's
    sign-in and provisioning, a full self-check (published, retained, as well), the last
    entries of the journal (masked, as ``agent journal`` shows them), and opening or closing a
    host-side incident for this terminal."""
    # only where telemetry is configured, as the reporter that carries these commands
    from agent.selfcheck import run_checks
    from agent.selfcheck.base import Status
    from agent.selfcheck.report import as_json

    async def selftest(_: dict[str, Any]) -> dict[str, Any]:
        report = await run_checks(agent.remedies.check_context())
        agent.reports.put(as_json(report, "en", agent.config.terminal.tid))
        failing = [f"{c.id}: {c.summary.en}" for c in report.checks if c.status is Status.FAIL]
        return {"healthy": report.ok, "failing": failing}

    async def journal(args: dict[str, Any]) -> dict[str, Any]:
        count = args.get("count", 20)
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not 0 < count <= JOURNAL_COMMAND_MAX
        ):
            raise ValueError(f'"count" must be 1 to {JOURNAL_COMMAND_MAX}')
        week = time.time() - 7 * 86_400
        entries = await agent.journal.run(timeline.entries, agent.journal, week)
        return {"entries": entries[-count:]}

    async def incident(args: dict[str, Any]) -> str:
        wanted = args.get("open")
        if not isinstance(wanted, bool):
            raise ValueError('"open" must be true (open a host-side incident) or false (close it)')
        if wanted:
            agent.incident.open("operator command")
            return "host-side incident open: recovery signs in rarely and re-provisions nothing"
        agent.incident.close("operator command")
        return "host-side incident closed"

    async def signin(request: dict[str, Any]) -> Any:
        return (await handlers["signin"](request))["result"]

    async def provision(request: dict[str, Any]) -> Any:
        return (await handlers["provision"](request))["result"]

    return {"selftest": selftest, "signin": signin, "provision": provision, "journal": journal,
            "incident": incident}  # fmt: skip


def telemetry_reporter(agent: Agent, handlers: dict[str, Handler]) -> Reporter:
    # only where telemetry is configured: a terminal without it never loads these
    from agent.telemetry.commands import Commands
    from agent.telemetry.reporter import ModuleIdentity, Reporter

    settings = agent.config.telemetry
    commands = None
    if settings.commands:
        commands = Commands(operator_commands(agent, handlers), agent.journal,
                            lambda: agent.config.telemetry.commands_per_minute)  # fmt: skip
    return Reporter(
        lambda: agent.config,
        agent.journal,
        agent.status,
        agent.recovery.state_changed,
        ModuleIdentity(agent.remedies.module_serial, agent.remedies.module_tusn),
        agent.reports,
        ids=agent.telemetry_ids,
        incident=agent.incident,
        commands=commands,
    )


async def sign_in_at_start(agent: Agent) -> None:
    """Sign in at start, then let queued reversals go (MACed under the keys just loaded).
    Requests wait for it, repair included. A refused sign-in starts recovery: there is no
    request to retry, only the sign-in. So does an approved one whose keys the module refuses
    (its master key is not the host's, DESIGN.md section 18)."""
    async with agent.recovery.busy():
        try:
            await agent.sender.sign_in()
        except (SignInError, ModuleError) as exc:
            log.warning("sign-in at start failed: %s", exc)
            await agent.recovery.after_sign_in_failed(exc)
        except (HostLinkError, JournalError) as exc:
            log.warning("sign-in at start failed: %s", exc)
    if agent.journal.has_queued_reversals:
        agent.reversals.waiting.set()


async def run(config: Config, reload: Callable[[], Config] | None = None) -> int:
    # first of all: a second agent on this journal or socket must change nothing
    with InstanceLock.of(config):
        if reload is not None:  # the service's own look: a damaged provisioning set aside
            try:
                config = reload()
            except (ConfigError, ProvisioningError) as exc:  # changed since it was read
                log.error("configuration read again under the lock: %s; the first read stays", exc)
        cpu.confine(config.gateway.cpu)  # before the agent starts its threads: they inherit it
        while True:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    return await _serve(stack, config, reload, paths.payment_socket(config))
            except JournalUnusable as exc:  # at the start: nothing was sent
                usable = await until_the_journal_opens(config, exc.error, reload)
                if usable is None:
                    return 0
                config = usable


async def _serve(
    stack: contextlib.AsyncExitStack,
    config: Config,
    reload: Callable[[], Config] | None,
    payment: Path,
) -> int:
    """Everything started here is closed by ``stack``, in the reverse order."""
    try:
        agent = Agent(config)
    except JournalError as exc:
        raise JournalUnusable(exc) from None
    stack.push_async_callback(agent.close)
    notify = Notifier()
    stack.callback(notify.close)
    try:
        recovered = await agent.journal.run(agent.journal.recover_pending)
    except JournalError as exc:
        raise JournalUnusable(exc) from None
    if recovered:
        log.warning(
            "%d request(s) were in flight when the agent stopped: reversals queued", recovered
        )
    await agent.app_socket.serve(payment, config.gateway.tcp_port)
    await agent.module_proxy.serve(paths.module_socket(config))
    handlers = control_handlers(agent)
    control = ControlServer(handlers)
    await control.serve(paths.control_socket(config))
    stack.push_async_callback(control.close)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_resource_errors(QuietLog()))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, _reloader(agent, reload, notify))
    loops = {
        "reversal sender": lambda: send_reversals_until_done(agent),
        "reversal recheck": lambda: recheck_reversals(agent),
        "start-up sign-in": lambda: sign_in_at_start(agent),
        "journal upkeep": lambda: journal_upkeep(agent),
        "periodic self-check": lambda: light_checks(agent),
    }
    if config.telemetry.enabled:
        reporter = telemetry_reporter(agent, handlers)
        loops["telemetry"] = reporter.run
        stack.push_async_callback(reporter.close)  # before the agent's: "offline, stopped"
    background = [asyncio.create_task(supervised(name, run)) for name, run in loops.items()]
    if notify.watchdog_interval:
        background.append(asyncio.create_task(feed_watchdog(notify, agent)))
    if notify.enabled:
        background.append(asyncio.create_task(announce_state(notify, agent)))
    stack.push_async_callback(_cancelled, background)
    hosts = ", ".join(map(str, config.endpoints)) or "none configured"
    log.info("ready: payment socket %s, host %s", payment, hosts)
    notify("READY=1", f"STATUS=ready; {agent.status.line()}")

    await stop.wait()
    log.info("stopping: waiting for transactions in flight")
    notify("STOPPING=1", "STATUS=stopping: finishing transactions in flight")
    await agent.app_socket.close()
    await agent.module_proxy.close()
    await control.close()
    await agent.app_socket.drain(DRAIN_TIMEOUT)
    return 0


async def _cancelled(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _quiet_resource_errors(
    quiet: QuietLog,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """asyncio logs every failed accept when descriptors run out, with a traceback, about once
    a second for as long as a flood lasts: once a minute with a count is enough."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message.startswith("socket.accept() out of system resource"):
            quiet.warning("accept", "%s: %s", message, context.get("exception"))
        else:
            loop.default_exception_handler(context)

    return handler


def _reloader(agent: Agent, reload: Callable[[], Config], notify: Notifier) -> Callable[[], None]:
    def on_sighup() -> None:
        notify("RELOADING=1")
        try:
            config = reload()
            changed = reconfigure(agent.settings, agent.link, config)
            agent.sender.macs.families.forget()  # the slot, or what is in it, may be another
            log.info("configuration reloaded; changed: %s", ", ".join(changed) or "nothing")
            agent.journal.note("config-reloaded", changed=changed)
        except (ConfigError, ProvisioningError) as exc:
            log.error("configuration not reloaded, the old one stays: %s", exc)
        except Exception:  # whatever failed, systemd must hear READY=1 again
            log.exception("configuration reload failed; the agent goes on as it was")
        finally:
            notify("READY=1", f"STATUS={agent.status.line()}")

    return on_sighup
