"""agent fleet: the fleet's terminals as their retained messages on the broker say they are;
agent fleet watch: the incident watcher (a service); agent fleet send: one operator command."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import TYPE_CHECKING, Any

from agent.cli import render
from agent.cli.common import EXIT_FAILED, EXIT_OK, UsageError, load_config
from agent.cli.render import print_json

if TYPE_CHECKING:
    from agent.config import Config
    from agent.fleet.sender import Sent

# agent fleet send: no answer came (as agent status's 3: no agent there to answer)
EXIT_NO_ANSWER = 3
SUBSCRIBE_TIMEOUT = 10.0  # seconds for the broker to grant agent fleet's subscription
QUIET = 0.5  # seconds without a new retained message: all of them have come
GATHER_MAX = 60.0  # seconds of retained messages at most (100,000 terminals take a few)
DETAIL_LINES = 200  # lines of an answer's detail shown as text


def configuration(args: argparse.Namespace) -> tuple[Config, str]:
    """The configuration and the broker: ``--broker`` alone reads no configuration file (the
    defaults: no TLS files, prefix ``pos``), with ``--config`` or without ``--broker`` the file
    is read."""
    from agent.config import Config, ConfigError, parse_value

    config = load_config(args) if args.config or not args.broker else Config()
    try:
        broker = parse_value("telemetry", "broker", args.broker, "--broker") if args.broker else ""
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    broker = broker or config.telemetry.broker
    if not broker:
        raise UsageError("no broker: give --broker mqtt[s]://HOST[:PORT] or set telemetry.broker")
    return config, broker


def cmd_fleet(args: argparse.Namespace) -> int:
    from agent.fleet import summary, topics
    from agent.fleet.subscription import BrokerError, Received, Subscription
    from agent.telemetry.mqtt import BrokerSettingsError

    config, broker = configuration(args)
    settings = config.telemetry
    prefix = settings.topic_prefix
    fleet = summary.Fleet(prefix)
    subscribed = [topics.states(prefix), topics.incidents(prefix)]
    try:
        with render.Progress(f"agent fleet: reading {broker}"):
            subscription = Subscription(settings, broker, subscribed, "summary")
            try:
                subscription.wait_subscribed(SUBSCRIBE_TIMEOUT)
                fleet.take(subscription.gather(QUIET, GATHER_MAX))
            except BrokerError:
                subscription.close()
                raise
    except BrokerSettingsError as exc:
        raise UsageError(str(exc)) from None
    except BrokerError as exc:
        print(f"agent fleet: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        show(summary.summarise(fleet, subscription.too_large), args.json, first=True)
        stop = _stopped_by_signals() if args.watch else None
        while stop is not None and not stop.is_set():
            first = subscription.get(1.0)
            if isinstance(first, Received):  # something changed: and what comes with it
                fleet.take([first, *subscription.gather(QUIET, 1.0)])
                show(summary.summarise(fleet, subscription.too_large), args.json, first=False)
    except KeyboardInterrupt:  # before the watch began
        pass
    finally:
        subscription.close()
    return EXIT_OK


def _stopped_by_signals() -> threading.Event:
    """Set by Ctrl-C or SIGTERM, for a loop that looks at it at least once a second. Not a
    KeyboardInterrupt: raised inside a queue's get, it could leave the queue's lock held, and
    paho's thread, putting the next message there, would then hold up the close for ever."""
    import signal

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def show(found: dict, as_json: bool, first: bool) -> None:
    from agent.fleet import summary

    if as_json:
        print_json(found)
    else:
        if not first and sys.stdout.isatty():
            print("\x1b[H\x1b[J", end="")  # in place on a terminal; a pipe gets each in turn
        print(summary.render(found))
    sys.stdout.flush()


def cmd_fleet_watch(args: argparse.Namespace) -> int:
    from agent.fleet.subscription import BrokerError
    from agent.fleet.watcher import Watcher
    from agent.service import logs
    from agent.service.notify import Notifier
    from agent.telemetry.mqtt import BrokerSettingsError

    logs.setup(args.verbose)
    config, broker = configuration(args)
    stop = _stopped_by_signals()  # systemctl stop, Ctrl-C: a clean stop
    notifier = Notifier()
    try:
        Watcher(config.telemetry, config.fleet, broker, notifier).run(stop)
    except BrokerSettingsError as exc:
        raise UsageError(str(exc)) from None
    except BrokerError as exc:
        print(f"agent fleet watch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        notifier.close()
    return EXIT_OK


def cmd_fleet_send(args: argparse.Namespace) -> int:
    from agent.fleet import sender
    from agent.fleet.shown import shown
    from agent.fleet.subscription import BrokerError
    from agent.telemetry.mqtt import BrokerSettingsError

    try:
        sender.validate(args.serial, args.cmd)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    command_args = parse_args_json(args.args)
    config, broker = configuration(args)
    try:
        with render.Progress(f"agent fleet send: waiting for {shown(args.serial)}"):
            sent = sender.send(
                config.telemetry,
                broker,
                args.serial,
                args.cmd,
                command_args,
                args.expires,
                args.timeout,
            )
    except BrokerSettingsError as exc:
        raise UsageError(str(exc)) from None
    except BrokerError as exc:
        print(f"agent fleet send: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except sender.NoAnswer as exc:
        print(f"agent fleet send: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    show_result(sent, args.json)
    return EXIT_OK if sent.result.ok else EXIT_FAILED


def parse_args_json(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"--args: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("--args: expected a JSON object, e.g. '{\"count\": 20}'")
    return value


def show_result(sent: Sent, as_json: bool) -> None:
    """The agent's answer; what it says is the terminal's text: escaped and clipped."""
    from agent.fleet.shown import shown, shown_json

    result = sent.result
    if as_json:
        print_json(
            {
                "serial": sent.serial,
                "id": sent.command_id,
                "cmd": sent.message["cmd"],
                "ok": result.ok,
                "detail": shown_json(result.detail, limit=2000),
                "at": shown(result.at),
            }
        )
        return
    verdict = "done" if result.ok else "refused or failed"
    at = f" at {shown(result.at)}" if result.at else ""
    print(f"{sent.message['cmd']} on {sent.serial}: {verdict}{at}")
    if result.detail in (None, ""):
        return
    if isinstance(result.detail, str):
        print(f"  {shown(result.detail, limit=2000)}")
        return
    try:  # json escapes C0 controls; shown() below the rest (C1, bidi marks)
        lines = json.dumps(result.detail, ensure_ascii=False, indent=2).splitlines()
    except (RecursionError, ValueError):
        lines = ["(nested too deeply to show here: --json shows it)"]
    print("\n".join(f"  {shown(line)}" for line in lines[:DETAIL_LINES]))
    if len(lines) > DETAIL_LINES:
        print(f"  ... {len(lines) - DETAIL_LINES} more line(s): --json shows them")
