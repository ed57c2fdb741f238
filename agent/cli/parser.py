"""The command line's parser (DESIGN.md section 11): every command and its options.

Each command's handler is named as ``"module:function"`` of ``agent.cli`` and imported only when
that command runs, so the service (``agent run``) loads none of the technician's commands.

The help is in English, or in Simplified Chinese when the locale asks for it and the console can
show it (:func:`agent.cli.render.help_language`): :class:`ChineseHelpFormatter` looks every text
up in :mod:`agent.cli.help_zh` as it lays out the help, so the table is imported only when a
Chinese help or usage is shown, never by the service."""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from agent.cli import render
from agent.cli.common import DEFAULT_CONFIG
from agent.display import columns
from agent.version import VERSION

# argparse's own words, which agent.cli.help_zh translates too ("positional arguments" and
# "options", the titles of the two sections, come from argparse)
USAGE_PREFIX = "usage: "
HELP_HELP = "show this help message and exit"
VERSION_HELP = "show program's version number and exit"


@functools.cache
def terminal_columns() -> int:
    """What ``shutil.get_terminal_size`` answers, without importing shutil: argparse's help
    formatter would import it on every ``add_argument``, and it brings zlib, bz2 and lzma (half a
    megabyte) into the service, which never compresses anything. Asked once per process: argparse
    makes a formatter for every argument it adds, a hundred as the parser is built."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class HelpFormatter(argparse.HelpFormatter):
    def __init__(self, prog: str, **options) -> None:
        options.setdefault("width", terminal_columns() - 2)
        super().__init__(prog, **options)


# where a line of Chinese may break: a run of anything but spaces and wide characters (an option,
# a path, an English word) stays whole; wide characters (CJK, full-width punctuation) one by one
_WIDE = r"\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff01-\uff60"
# no line starts with a closing mark nor ends with an opening one (full-width ! ?, quotes escaped)
_NO_LINE_START = frozenset("，。、；：\uff01\uff1f）》」』\u201d\u2019")
_NO_LINE_END = frozenset("（《「『\u201c\u2018")


@functools.cache
def _pieces() -> re.Pattern[str]:
    """Compiled at the first Chinese help, not at import: it takes 1.6 ms, and every command,
    the service too, builds the parser."""
    return re.compile(rf" |[^ {_WIDE}]+|.")


def wrap_columns(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` terminal columns (a Chinese character takes two):
    broken at spaces and between Chinese characters, never inside an option, a path or an
    English word, nor before a closing or after an opening punctuation mark. Only a piece that
    cannot be broken and is wider than ``width`` makes a longer line."""
    pieces: list[tuple[bool, str]] = []  # (a space before it, the piece), each unbreakable
    space = False
    for piece in _pieces().findall(" ".join(text.split())):
        if piece == " ":
            space = True
            continue
        if pieces and not space:
            before, last = pieces[-1]
            if piece in _NO_LINE_START or last[-1] in _NO_LINE_END:
                pieces[-1] = (before, last + piece)
                continue
        pieces.append((space, piece))
        space = False
    lines: list[str] = []
    line, used = "", 0
    for space, piece in pieces:
        need = columns(piece) + (space and bool(line))
        if line and used + need > width:
            lines.append(line)
            line, used, need = "", 0, columns(piece)
        line += " " * (need > columns(piece)) + piece
        used += need
    return [*lines, line] if line else lines


class ChineseHelpFormatter(HelpFormatter):
    """The help in Simplified Chinese: the descriptions, the help of every option and command
    and argparse's own words (the usage prefix, the section titles) are looked up in
    :data:`agent.cli.help_zh.HELP` as they are laid out (a text it does not know stays English),
    and lines are wrapped by terminal columns, not characters."""

    @staticmethod
    def translate(text: str) -> str:
        from agent.cli.help_zh import HELP  # only for a Chinese help: never in the service

        return HELP.get(text, text)

    def _format_usage(
        self,
        usage: str | None,
        actions: Iterable[argparse.Action],
        groups: Iterable[argparse._MutuallyExclusiveGroup],
        prefix: str | None,
    ) -> str:
        if prefix is not None:  # add_subparsers' prog, made with no prefix
            return super()._format_usage(usage, actions, groups, prefix)
        prefix = self.translate(USAGE_PREFIX)
        width = columns(prefix)
        if usage is not None:  # written for "usage: ": its next lines moved under the first
            first, *rest = usage.split("\n")
            shift = len(USAGE_PREFIX) - width
            pad = " " * max(-shift, 0)
            rest = [pad + (line[shift:] if line[:shift] == " " * shift else line) for line in rest]
            usage = "\n".join([first, *rest])
        # laid out for a prefix as wide as the Chinese one, so that wrapped lines line up
        text = super()._format_usage(usage, actions, groups, " " * width)
        return prefix + text[width:]

    def start_section(self, heading: str | None) -> None:
        super().start_section(self.translate(heading) if heading else heading)

    def add_text(self, text: str | None) -> None:
        if text and text != argparse.SUPPRESS:
            text = self.translate(text)
        super().add_text(text)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        return self.translate(text) if text else text

    def _split_lines(self, text: str, width: int) -> list[str]:
        return wrap_columns(text, width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(indent + line for line in wrap_columns(text, width - len(indent)))


class Parser(argparse.ArgumentParser):
    """argparse's parser whose help is laid out by :class:`HelpFormatter` (or the
    ``formatter_class`` given); ``add_subparsers`` makes its subcommands of the same class with
    the same formatter. ``-h``/``--help`` is added here, its help a text the Chinese formatter
    translates."""

    def __init__(self, **options) -> None:
        options.setdefault("formatter_class", HelpFormatter)
        add_help = options.pop("add_help", True)
        super().__init__(add_help=False, **options)
        if add_help:
            self.add_argument("-h", "--help", action="help", help=HELP_HELP)

    def add_subparsers(self, **options) -> argparse._SubParsersAction:
        options.setdefault(
            "parser_class", functools.partial(type(self), formatter_class=self.formatter_class)
        )
        return super().add_subparsers(**options)


def build_parser(language: str | None = None) -> argparse.ArgumentParser:
    """The parser, its help in ``language`` (``zh`` or ``en``; by default
    :func:`agent.cli.render.help_language`, which the locale and the console decide)."""
    chinese = (language or render.help_language()) == "zh"
    parser = Parser(
        prog="agent",
        formatter_class=ChineseHelpFormatter if chinese else HelpFormatter,
        description="pos-agent: keeps a POS terminal registered with its acquirer "
        "(diagnoses and repairs response 97, 终端未登记).",
    )
    parser.add_argument(
        "--version", action="version", version=f"pos-agent {VERSION}", help=VERSION_HELP
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "explain",
        help="explain a response code (field 39), a finding (e.g. registration.tusn-refused) "
        "or a header processing requirement",
    )
    p.add_argument(
        "code", nargs="?", help="two-character response code, e.g. 97, or a finding code"
    )
    p.add_argument(
        "--requirement",
        metavar="N",
        help="explain the header's processing requirement N (0-15) instead, or 'all' for the table",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler="explain:cmd_explain")

    p = sub.add_parser("decode", help="decode an ISO 8583 frame given in hex (masked)")
    p.add_argument("hex", metavar="HEX|-", help="the frame in hex, or - to read hex from stdin")
    p.add_argument(
        "--frame",
        choices=["auto", "host", "app", "tpdu", "bare"],
        default="auto",
        help="framing: host = length+TPDU+header, app = length only, tpdu = TPDU+header, "
        "bare = message only; auto-detected by default",
    )
    p.add_argument("--profile", type=Path, help="wire profile (TOML) of the acquirer")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler="decode:cmd_decode")

    simulators = sub.add_parser("sim", help="run a simulator").add_subparsers(
        dest="simulator", metavar="SIMULATOR", required=True
    )
    p = simulators.add_parser(
        "module",
        help="card module simulator on a pty or a TCP port",
        description="Card module simulator speaking the serial protocol of DESIGN.md section 5. "
        "Prints the path to open as its first line, then reads commands on stdin: noise RATE, "
        "drop RATE, delay SECONDS, busy COUNT, tamper on|off, unplug, replug, garbage COUNT, "
        "status, quit.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--pty", action="store_true", help="serve on a new pty (the default)")
    where.add_argument("--url", help="listen on socket://HOST:PORT instead of a pty")
    p.add_argument(
        "--link", type=Path, help="keep a symlink to the pty here (stable across replug)"
    )
    p.add_argument("--state", type=Path, help="state file with the keys (created on first start)")
    p.add_argument("--noise", default="0", help="rate of corrupted bytes, 0-1")
    p.add_argument("--drop", default="0", help="rate of lost bytes, 0-1")
    p.add_argument("--delay", default="0", help="seconds before each reply")
    p.add_argument("--busy", default="0", help="answer the next N commands with busy")
    p.add_argument("--tamper", action="store_true", help="start with the tamper flag set")
    p.add_argument("--clock-offset", type=float, default=0.0, help="RTC offset in seconds")
    p.add_argument("--seed", type=int, help="seed of the fault generator (repeatable runs)")
    p.set_defaults(handler="sim:cmd_sim_module")

    p = simulators.add_parser("host", help="acquirer host simulator (ISO 8583 over TCP)")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default: any free port)")
    p.add_argument(
        "--registry",
        type=Path,
        default=Path("host-registry.json"),
        help="terminal registry (JSON; created with one test terminal if absent)",
    )
    p.add_argument("--admin-port", type=int, default=0, help="admin HTTP port on 127.0.0.1")
    p.add_argument("--tls-cert", type=Path, help="serve TLS with this certificate chain (PEM)")
    p.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")
    p.add_argument(
        "--key-layout",
        type=int,
        default=0,
        choices=range(8),
        metavar="0-7",
        help="field 62 layout of sign-ins (DESIGN.md section 4); 0: the scheme's full-length one",
    )
    p.add_argument("--batch", type=int, default=1, help="the host's batch number (60.2 of 0810)")
    p.add_argument(
        "--check-batch", action="store_true", help="answer 77 to a purchase of another batch"
    )
    p.add_argument(
        "--check-tusn",
        action="store_true",
        help="refuse (97) a purchase or pre-authorisation without a right field 59 A2 of a "
        "reported TUSN (DESIGN.md section 17)",
    )
    p.add_argument(
        "--schemes",
        metavar="SCHEME[,SCHEME]",
        help="sign-in schemes (60.3) the host accepts, e.g. 004,006 as a posp_server-style "
        "host; others are answered 40 (default: every scheme it can issue keys for)",
    )
    p.add_argument("--profile", type=Path, help="wire profile (TOML) to decode and encode with")
    p.set_defaults(handler="sim:cmd_sim_host")

    p = simulators.add_parser("tms", help="terminal management system simulator (HTTP JSON)")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default: any free port)")
    p.add_argument(
        "--data", type=Path, default=Path("tms.json"), help="provisioning by module serial (JSON)"
    )
    p.set_defaults(handler="sim:cmd_sim_tms")

    p = sub.add_parser("run", help="run the agent (what the systemd service starts)")
    p.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(handler="run:cmd_run")

    def technician(name: str, help: str, handler: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")
        p.set_defaults(handler=handler)
        return p

    technician("signin", "sign in to the host now (签到) and load fresh working keys",
               "remedies:cmd_signin")  # fmt: skip
    technician("provision", "fetch this terminal's TID/MID/hosts from the TMS, then sign in",
               "remedies:cmd_provision")  # fmt: skip
    technician("echo", "echo test (0820/301) to the host", "echo:cmd_echo")
    p = technician("status", "what the running agent is doing", "status:cmd_status")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--lang", choices=["zh", "en"], help="language (default: the locale's)")
    p = technician("journal", "the journal's timeline: transactions, recoveries, events",
                   "journal:cmd_journal")  # fmt: skip
    p.add_argument("--since", help="only since: 30m, 2h, 1d, an ISO time, or epoch seconds")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--lang", choices=["zh", "en"], help="language (default: the locale's)")
    p = technician("params", "parameters, CA keys and IC parameters the host sent",
                   "params:cmd_params")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON")
    config = sub.add_parser("config", help="configuration tools").add_subparsers(
        dest="config_command", metavar="ACTION", required=True
    )
    p = config.add_parser("check", help="validate the configuration and show what is in effect")
    p.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")
    p.set_defaults(handler="config_check:cmd_config_check")
    module = sub.add_parser("module", help="card module tools").add_subparsers(
        dest="module_command", metavar="ACTION", required=True
    )
    p = module.add_parser(
        "check",
        help="conformance run against the card module, through its driver",
        description="Runs the cases of the module protocol (DESIGN.md section 5) against the "
        "module through its driver (module.driver, a pos_agent.modules entry point): commands, "
        "statuses, KCVs, MACs, TUSN, PIN entry, repeated SEQ, noise, unplug. Cases that load "
        "keys run only on a slot holding the documented test TMK, and replace its working keys; "
        "a production module's keys are left alone and those cases skipped. Stop the service "
        "first: it is the only user of the line. Exit 0 no case failed, 1 a case failed, "
        "2 usage (no such driver, one that cannot load).",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="the module at URL instead of module.url")
    where.add_argument(
        "--sim",
        action="store_true",
        help="start the module simulator and run against it, with its fault injection "
        "(noise, unplug) and test keypad",
    )
    p.add_argument("--driver", metavar="NAME", help="this driver instead of module.driver")
    p.add_argument(
        "--slot",
        type=int,
        action="append",
        metavar="N",
        help="check slot N (repeatable; default 0 and 1, the documented test slots)",
    )
    p.add_argument(
        "--test-keys",
        action="store_true",
        help="the module must hold the documented test keys: a slot without them fails",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="a person is at the module's keypad and types 123456 when asked",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")
    p.set_defaults(handler="module_check:cmd_module_check")

    p = sub.add_parser(
        "selftest",
        help="check the terminal: provisioning, clock, network, keys, module, storage",
        description="Runs the self-check (asks the running agent, or checks directly). "
        "Exit 0 healthy (warnings allowed), 1 a check failed, 2 could not run.",
    )
    p.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")
    p.add_argument("--json", action="store_true", help="print the pinned JSON report")
    p.add_argument("--only", metavar="ID[,ID]", help="run only these checks")
    p.add_argument("--lang", choices=["zh", "en"], help="language (default: from the locale)")
    p.set_defaults(handler="selftest:cmd_selftest")

    fleet_parser(sub)

    p = sub.add_parser(
        "demo", help="the agent at work on simulators: a 97 recovered, then one escalated"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show the agent's log too")
    p.set_defaults(handler="demo:cmd_demo")
    return parser


def fleet_parser(sub: argparse._SubParsersAction) -> None:
    """``agent fleet`` and its two subcommands: ``agent fleet --watch`` is the summary kept up
    to date, ``agent fleet watch`` the incident watcher (a service)."""

    def broker_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--broker",
            help="mqtt[s]://HOST[:PORT] (default: telemetry.broker); alone, no configuration "
            "file is read",
        )
        p.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")

    p = sub.add_parser(
        "fleet",
        usage="agent fleet [-h] [--broker URL] [--config FILE] [--json] [--watch]\n"
        "       agent fleet watch [-h] [--broker URL] [--config FILE] [-v]\n"
        "       agent fleet send [-h] SERIAL COMMAND [--args JSON] [--expires SECONDS]\n"
        "                        [--timeout SECONDS] [--broker URL] [--config FILE] [--json]",
        help="the fleet's terminals from the MQTT broker: open incidents, counts by state and "
        "cause, who needs a person; 'fleet watch' the incident watcher, 'fleet send' a command",
        description="Reads the retained states and incidents on the broker (DESIGN.md section "
        "14). Text from the broker is shown escaped and clipped; messages that cannot be read "
        "are counted. Exit 0, 1 the broker cannot be reached, 2 usage or configuration.",
    )
    broker_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--watch", action="store_true", help="keep the summary up to date; Ctrl-C stops")
    p.set_defaults(handler="fleet:cmd_fleet")
    # prog: not the usage above, which already names the two subcommands
    commands = p.add_subparsers(dest="fleet_command", metavar="ACTION", prog=p.prog)

    watch = commands.add_parser(
        "watch",
        help="the incident watcher: opens and closes host-side incidents (a long-running service)",
        description="Opens a retained host-side incident on <prefix>/incidents/<acquirer host> "
        "when fleet.incident_min_terminals terminals of one acquirer host report 97 or become "
        "unregistered within fleet.incident_window seconds with a healthy self-check, and closes "
        "it when they are registered again or after the window without a 97. Events come "
        "through the MQTT 5 shared subscription $share/pos-fleet/<prefix>/+/event, so several "
        "watchers split them (under MQTT 3.1.1 each hears all). SIGTERM stops it. Exit 0 "
        "stopped, 1 the broker cannot be reached, 2 usage or configuration.",
    )
    broker_options(watch)
    watch.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    watch.set_defaults(handler="fleet:cmd_fleet_watch")

    send = commands.add_parser(
        "send",
        help="send an operator command to one terminal and print its answer",
        description="Publishes {cmd, args, expires} on <prefix>/SERIAL/cmd/<id> (QoS 1, not "
        "retained) and waits for the agent's answer on .../result. The agent runs commands "
        "only with telemetry.commands = true over TLS with a pinned CA. Exit 0 done, 1 the "
        "agent refused or failed (or the broker cannot be reached), 2 usage, 3 no answer "
        "within --timeout.",
    )
    send.add_argument("serial", metavar="SERIAL", help="the terminal's card module serial")
    send.add_argument(
        "cmd",
        metavar="COMMAND",
        help="selftest, signin, provision, journal (the last N masked events) or incident "
        "(open or close a host-side incident for this terminal)",
    )
    send.add_argument("--args", metavar="JSON", help="the command's arguments, a JSON object")
    send.add_argument(
        "--expires",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="the agent refuses the command after this many seconds (default 60)",
    )
    send.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the answer (default 30)",
    )
    broker_options(send)
    send.add_argument("--json", action="store_true", help="print JSON")
    send.set_defaults(handler="fleet:cmd_fleet_send")


def _seconds(text: str) -> float:
    """A positive number of seconds, at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError("expected seconds above 0, at most 86400")
    return value
