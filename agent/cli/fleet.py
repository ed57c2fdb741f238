"""agent fleet: the fleet's terminals as their retained states on the broker say they are."""

from __future__ import annotations

import argparse
import sys

from agent.cli import render
from agent.cli.common import EXIT_FAILED, EXIT_OK, UsageError, load_config
from agent.cli.render import print_json


def cmd_fleet(args: argparse.Namespace) -> int:
    from agent.config import ConfigError, TelemetryConfig, parse_value
    from agent.telemetry import fleet

    settings = load_config(args).telemetry if args.config or not args.broker else TelemetryConfig()
    try:
        broker = parse_value("telemetry", "broker", args.broker, "--broker") if args.broker else ""
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    broker = broker or settings.broker
    if not broker:
        raise UsageError("no broker: give --broker mqtt[s]://HOST[:PORT] or set telemetry.broker")
    try:
        with render.Progress(f"agent fleet: reading {broker}"):
            watch = fleet.Watch(settings, broker)
            watch.settle()
    except fleet.FleetError as exc:
        print(f"agent fleet: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        show(fleet.summarise(list(watch.states.values())), args.json, first=True)
        while args.watch:
            watch.changed.clear()
            if watch.changed.wait(1.0):
                watch.settle(deadline=1.0)
                show(fleet.summarise(list(watch.states.values())), args.json, first=False)
    except KeyboardInterrupt:
        pass
    finally:
        watch.close()
    return EXIT_OK


def show(summary: dict, as_json: bool, first: bool) -> None:
    from agent.telemetry import fleet

    if as_json:
        print_json(summary)
    else:
        if not first and sys.stdout.isatty():
            print("\x1b[H\x1b[J", end="")  # in place on a terminal; a pipe gets each in turn
        print(fleet.render(summary))
    sys.stdout.flush()
