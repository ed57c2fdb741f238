"""The ``agent`` command line (DESIGN.md section 11)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__

if TYPE_CHECKING:
    from agent.config import Config
    from agent.wire.profile import Profile

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_NOT_RUNNING = 3  # agent status: as systemctl status for a unit that is not active
DEFAULT_CONFIG = "/etc/pos-agent/agent.toml"


class UsageError(Exception):
    """Bad input from the person at the keyboard: printed as one line, exit 2."""


def _print_json(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


# ------------------------------------------------------------------------------------ commands


def cmd_explain(args: argparse.Namespace) -> int:
    from agent.wire import codes

    if args.requirement is not None:
        if args.code is not None:
            raise UsageError("give a response code or --requirement, not both")
        return _explain_requirement(args.requirement, args.json)
    if args.code is None:
        raise UsageError("give a response code (e.g. 97) or --requirement N")
    try:
        rc = codes.lookup(args.code)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        _print_json(rc.as_dict())
        return EXIT_OK
    print(f"{rc.code}  {rc.zh}")
    print(f"    {rc.en}")
    print(f"category  {rc.category}")
    print(f"action    {rc.action_en}")
    print(f"处理      {rc.action_zh}")
    return EXIT_OK


def _explain_requirement(which: str, as_json: bool) -> int:
    from agent.wire.frame import PROCESSING_REQUIREMENTS

    if which == "all":
        numbers = list(PROCESSING_REQUIREMENTS)
    elif which.isascii() and which.isdigit() and int(which) <= 15:
        numbers = [int(which)]
    else:
        raise UsageError(f"--requirement {which!r}: expected 0 to 15 (a nibble), or all")
    rows = [
        {
            "requirement": n,
            "known": n in PROCESSING_REQUIREMENTS,
            "host_asks": PROCESSING_REQUIREMENTS.get(n, ("not defined by CUP", ""))[0],
            "agent_does": PROCESSING_REQUIREMENTS.get(n, ("", "nothing (not acted on)"))[1],
        }
        for n in numbers
    ]
    if as_json:
        _print_json(rows if which == "all" else rows[0])
        return EXIT_OK
    for row in rows:
        print(f"{row['requirement']:>2}  host asks: {row['host_asks']}; agent: {row['agent_does']}")
    return EXIT_OK


def _read_hex(text: str) -> bytes:
    digits = "".join(text.split())
    for index, char in enumerate(digits):
        if char not in "0123456789abcdefABCDEF":
            raise UsageError(f"input: character {index + 1} ({char!r}) is not a hex digit")
    if len(digits) % 2:
        raise UsageError(f"input: odd number of hex digits ({len(digits)}); bytes need two each")
    if not digits:
        raise UsageError("input: no hex digits given")
    return bytes.fromhex(digits)


def cmd_decode(args: argparse.Namespace) -> int:
    from agent.wire.describe import describe_frame, render_frame
    from agent.wire.errors import DecodeError
    from agent.wire.frame import Layout, decode_frame

    profile = _profile(args)
    data = _read_hex(sys.stdin.read() if args.hex == "-" else args.hex)
    layout = None if args.frame == "auto" else Layout(args.frame)
    try:
        frame = decode_frame(data, layout, profile)
    except DecodeError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        _print_json(describe_frame(frame, profile))
    else:
        print(render_frame(frame, profile))
    return EXIT_OK


def _listen_address(url: str) -> tuple[str, int]:
    host, sep, port = url.removeprefix("socket://").rpartition(":")
    if not url.startswith("socket://") or not sep or not port.isdigit():
        raise UsageError(f"--url {url!r}: only socket://HOST:PORT can be listened on")
    return host, int(port)


def cmd_sim_module(args: argparse.Namespace) -> int:
    from agent.sim import module_console
    from agent.wire.mac import require_software_des

    require_software_des()
    listen = _listen_address(args.url) if args.url else None
    state = args.state or _state_dir() / "module-sim.json"
    settings = [f"{name} {getattr(args, name)}" for name in ("noise", "drop", "delay", "busy")]
    if args.tamper:
        settings.append("tamper on")
    try:
        return module_console.run(
            state_path=state,
            listen=listen,
            link=args.link,
            settings=settings,
            clock_offset=args.clock_offset,
            seed=args.seed,
        )
    except ValueError as exc:  # a bad flag value or an unreadable state file
        raise UsageError(str(exc)) from None


def _load_config(args: argparse.Namespace) -> Config:
    """The configuration file, with what re-provisioning saved laid over it."""
    from agent import paths, provisioning
    from agent.config import ConfigError, load

    try:
        config = load(args.config)
        return provisioning.effective(config, paths.provisioning_path(config))
    except (ConfigError, provisioning.ProvisioningError) as exc:
        raise UsageError(str(exc)) from None


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from agent.journal import JournalError
    from agent.service import daemon, logs

    config = _load_config(args)
    logs.setup(args.verbose)

    def reload() -> Config:
        from agent import paths, provisioning
        from agent.config import load

        fresh = load(args.config)
        return provisioning.effective(fresh, paths.provisioning_path(fresh))

    try:
        return asyncio.run(daemon.run(config, reload))
    except JournalError as exc:
        print(f"agent run: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _with_agent(args: argparse.Namespace, command: str, direct: str) -> int:
    """Run a remedy (``signin``, ``provision``) through the running agent, or, with none
    running, with an agent assembled for the occasion; print what it did."""
    import asyncio

    from agent.journal import JournalError
    from agent.recovery.remedies import RemedyFailed
    from agent.service.assembly import Agent

    config = _load_config(args)
    try:
        answer = _ask_agent(config, {"cmd": command})
    except UsageError as exc:  # the agent ran the command and it failed
        print(f"agent {command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if answer is not None:
        print(answer["result"])
        return EXIT_OK

    async def by_hand() -> str:
        agent = Agent(config)
        try:
            return await getattr(agent, direct)()
        finally:
            await agent.close()

    try:
        print(asyncio.run(by_hand()))
    except (RemedyFailed, JournalError) as exc:
        print(f"agent {command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_signin(args: argparse.Namespace) -> int:
    return _with_agent(args, "signin", "sign_in")


def cmd_provision(args: argparse.Namespace) -> int:
    return _with_agent(args, "provision", "provision_by_hand")


def cmd_status(args: argparse.Namespace) -> int:
    import datetime

    config = _load_config(args)
    answer = _ask_agent(config, {"cmd": "status"})
    if answer is None:
        where = _control(config)
        if args.json:
            _print_json({"running": False, "state": "not-running", "registered": False,
                         "tid": config.terminal.tid, "control_socket": str(where)})  # fmt: skip
        else:
            print(f"agent status: no agent running (control socket {where})", file=sys.stderr)
        return EXIT_NOT_RUNNING
    answer.pop("ok", None)
    code = EXIT_OK if answer.get("registered") else EXIT_FAILED  # as `systemctl status`
    if args.json:
        _print_json({"running": True, **answer})
        return code
    host = answer["host"]
    signed = answer["signed_in"]
    lines = [
        f"state       {answer['state']}",
        f"terminal    TID {answer['tid'] or '-'}, MID {answer['mid'] or '-'}",
        f"host        {host['endpoint'] or '-'} "
        f"({'connected' if host['connected'] else 'not connected'}"
        f"{', ' + host['last_error'] if host['last_error'] else ''})",
        "signed in   "
        + (
            f"{datetime.datetime.fromtimestamp(signed['at']):%Y-%m-%d %H:%M:%S}, scheme "
            f"{signed['scheme']}, KCVs " + ", ".join(f"{k} {v}" for k, v in signed["kcvs"].items())
            if signed
            else "never"
        ),
        f"reversals   {answer['reversals_queued']} queued",
    ]
    refusal = answer["last_refusal"]
    if refusal:
        when = datetime.datetime.fromtimestamp(refusal["at"])
        lines.append(f"last 97     {refusal['code']} at {when:%Y-%m-%d %H:%M:%S}")
    if answer["message"]:
        lines.append(f"message     {answer['message']['zh']}")
        lines.append(f"            {answer['message']['en']}")
    print("\n".join(lines))
    return code


def _control(config: Config) -> Path:
    from agent import paths

    return paths.control_socket(config)


def cmd_echo(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from agent.host.link import HostLink, HostLinkError
    from agent.journal import Journal
    from agent.wire.builders import Terminal, echo_request

    config = _load_config(args)
    answer = _ask_agent(config, {"cmd": "echo"})
    if answer is None:
        if not config.endpoints:
            raise UsageError("no host configured (host.primary)")
        from agent import paths

        async def direct() -> dict[str, object]:
            journal = Journal(paths.journal_path(config))
            link = HostLink.from_config(config)
            terminal = Terminal(config.terminal.tid, config.terminal.mid)
            message = echo_request(terminal, stan=journal.next_stan(), batch=journal.batch)
            started = time.monotonic()
            try:
                exchange = await link.request(message)
                return {
                    "response_code": exchange.frame.message.text(39, "??"),
                    "ms": round((time.monotonic() - started) * 1000, 1),
                    "host": link.status.endpoint,
                }
            finally:
                await link.close()
                journal.close()

        try:
            answer = asyncio.run(direct())
        except HostLinkError as exc:
            print(f"agent echo: {exc}", file=sys.stderr)
            return EXIT_FAILED
    print(f"echo {answer['host']}: {answer['response_code']} in {answer['ms']} ms")
    return EXIT_OK if answer["response_code"] == "00" else EXIT_FAILED


def cmd_journal(args: argparse.Namespace) -> int:
    from agent import paths, timeline
    from agent.journal import Journal, JournalError

    config = _load_config(args)
    try:
        since = timeline.parse_since(args.since) if args.since else 0.0
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    answer = _ask_agent(config, {"cmd": "journal", "since": since})
    if answer is not None:  # the service's own connection sees every change
        entries = answer["entries"]
    else:
        path = paths.journal_path(config)
        if not path.exists():
            print(f"agent journal: no journal at {path}", file=sys.stderr)
            return EXIT_FAILED
        try:
            journal = Journal(path, read_only=True)  # a look: it creates and changes nothing
            entries = timeline.entries(journal, since)
            journal.close()
        except JournalError as exc:
            print(f"agent journal: {exc}", file=sys.stderr)
            return EXIT_FAILED
    if args.json:
        _print_json(entries)
    else:
        print(timeline.render(entries) or "(nothing since then)")
    return EXIT_OK


def cmd_params(args: argparse.Namespace) -> int:
    """What the session downloads brought, read from the state directory (no service needed)."""
    from agent import paths
    from agent.session.store import ParameterStore

    store = ParameterStore(paths.parameters_path(_load_config(args)))
    try:
        data = store.read()
    except (OSError, ValueError) as exc:
        print(f"agent params: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        _print_json(data)
        return EXIT_OK
    if not data:
        print(f"no parameters downloaded yet ({store.path})")
        return EXIT_OK
    print(f"downloaded parameters ({store.path}):")
    for line in _params_lines(data):
        print(line)
    return EXIT_OK


def _params_lines(data: dict[str, Any]) -> list[str]:
    from datetime import datetime

    lines = []
    for section, content in data.items():
        when = datetime.fromtimestamp(content.get("at", 0)).isoformat(" ", "seconds")
        lines.append(f"{section} (downloaded {when}):")
        if section == "terminal":
            lines += [f"  {name}: {value}" for name, value in content.get("values", {}).items()]
            if content.get("unparsed"):
                lines.append(f"  not decoded (unknown tag): {content['unparsed']}")
        elif section == "ca_keys":
            lines += [
                f"  {key['rid']}/{key['index']} expires {key.get('expiry') or '?'}"
                for key in content.get("keys", [])
            ]
        elif section == "ic_parameters":
            lines += [f"  AID {aid['aid']}: {len(aid['tags'])} tags" for aid in content["aids"]]
        elif section == "contactless":
            lines.append(f"  tags {', '.join(content.get('tags', {}))}")
        elif section == "status_upload":
            lines.append(f"  {len(content.get('sent', '')) // 2} bytes sent")
    return lines


def cmd_config_check(args: argparse.Namespace) -> int:
    import dataclasses

    from agent import paths

    config = _load_config(args)
    overlay = paths.provisioning_path(config)
    print(f"configuration {config.source}: valid")
    if overlay.exists():
        print(f"re-provisioned values from {overlay} are laid over it")
    for section in dataclasses.fields(config):
        if section.name == "source":
            continue
        values = getattr(config, section.name)
        shown = ", ".join(
            f"{f.name}={_shown(f.name, getattr(values, f.name))}"
            for f in dataclasses.fields(values)
        )
        print(f"[{section.name}] {shown}")
    return EXIT_OK


def _shown(name: str, value: object) -> str:
    if value is None or value == "":
        return "-"
    if name.startswith("tpdu_"):
        return f"{value:04X}"
    if name in ("software_version", "header_category"):
        return f"{value:02X}"
    if name == "key_layout":
        return str(value or "auto")
    if name == "profile":
        return getattr(value, "name", str(value))
    return str(value)


def cmd_sim_host(args: argparse.Namespace) -> int:
    from agent.sim import host_server
    from agent.wire.mac import require_software_des

    require_software_des()
    listen = _listen_endpoint(args.listen)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    try:
        return host_server.main(
            args.registry,
            listen,
            args.admin_port,
            tls,
            key_layout=args.key_layout,
            batch=args.batch,
            check_batch=args.check_batch,
            profile=_profile(args),
        )
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def _profile(args: argparse.Namespace) -> Profile:
    """The wire profile of ``--profile``, or the built-in CUP one."""
    from agent.wire.profile import CUP, ProfileError, load_profile

    if args.profile is None:
        return CUP
    try:
        return load_profile(args.profile)
    except ProfileError as exc:
        raise UsageError(f"--profile: {exc}") from None


def _listen_endpoint(text: str) -> tuple[str, int]:
    from agent.config import parse_endpoint

    try:
        endpoint = parse_endpoint(text, listening=True)
    except ValueError as exc:
        raise UsageError(f"--listen {text!r}: {exc}") from None
    if endpoint is None:
        raise UsageError("--listen needs HOST:PORT")
    return endpoint.host, endpoint.port


def cmd_sim_tms(args: argparse.Namespace) -> int:
    from agent.sim import tms

    try:
        return tms.main(args.data, _listen_endpoint(args.listen))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_selftest(args: argparse.Namespace) -> int:
    import asyncio
    import datetime

    from agent.selfcheck import CHECKS, Report
    from agent.selfcheck.base import CheckResult
    from agent.selfcheck.local import run_local
    from agent.selfcheck.report import as_text, default_language, dumps

    only = [part for part in (args.only or "").split(",") if part] or None
    for check_id in only or []:
        if check_id not in CHECKS:
            raise UsageError(f"--only {check_id}: no such check; expected {', '.join(CHECKS)}")
    config = _load_config(args)
    lang = args.lang or default_language()
    answer = _ask_agent(config, {"cmd": "selftest", "only": only})
    if answer is not None:
        report = Report([CheckResult.from_json(c) for c in answer["checks"]], answer["duration_ms"])
        where = "asked the running agent"
    else:
        report = asyncio.run(run_local(config, only))
        where = "no agent running: checked directly"
    if args.json:
        print(dumps(report, lang))
    else:
        tid = config.terminal.tid or "-"
        when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        title = (
            f"pos-agent 自检 — 终端号 {tid} — {when}"
            if lang == "zh"
            else f"pos-agent self-check — TID {tid} — {when} ({where})"
        )
        print(as_text(report, lang, title))
    return EXIT_OK if report.ok else EXIT_FAILED


def _ask_agent(config: Config, request: dict[str, object]) -> dict[str, object] | None:
    """The running agent's answer over its control socket, or None when none is running."""
    from agent import paths
    from agent.service import control

    try:
        return control.request(paths.control_socket(config), request)
    except control.NotRunning:
        return None
    except control.ControlError as exc:
        raise UsageError(str(exc)) from None


def _state_dir() -> Path:
    from agent import paths

    return paths.state_dir()


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(args.verbose)


# ------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent",
        description="pos-agent: keeps a POS terminal registered with its acquirer "
        "(diagnoses and repairs response 97, 终端未登记).",
    )
    parser.add_argument("--version", action="version", version=f"pos-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "explain", help="explain a response code (field 39) or a header processing requirement"
    )
    p.add_argument("code", nargs="?", help="two-character response code, e.g. 97")
    p.add_argument(
        "--requirement",
        metavar="N",
        help="explain the header's processing requirement N (0-15) instead, or 'all' for the table",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_explain)

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
    p.set_defaults(handler=cmd_decode)

    sim = sub.add_parser("sim", help="run a simulator").add_subparsers(
        dest="simulator", metavar="SIMULATOR", required=True
    )
    p = sim.add_parser(
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
    p.set_defaults(handler=cmd_sim_module)

    p = sim.add_parser("host", help="acquirer host simulator (ISO 8583 over TCP)")
    p.add_argument("--listen", required=True, help="HOST:PORT to serve on")
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
    p.add_argument("--profile", type=Path, help="wire profile (TOML) to decode and encode with")
    p.set_defaults(handler=cmd_sim_host)

    p = sim.add_parser("tms", help="terminal management system simulator (HTTP JSON)")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default: any free port)")
    p.add_argument(
        "--data", type=Path, default=Path("tms.json"), help="provisioning by module serial (JSON)"
    )
    p.set_defaults(handler=cmd_sim_tms)

    p = sub.add_parser("run", help="run the agent (what the systemd service starts)")
    p.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(handler=cmd_run)

    def technician(name: str, help: str, handler: Callable[[argparse.Namespace], int]):
        p = sub.add_parser(name, help=help)
        p.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")
        p.set_defaults(handler=handler)
        return p

    technician("signin", "sign in to the host now (签到) and load fresh working keys", cmd_signin)
    technician("provision", "fetch this terminal's TID/MID/hosts from the TMS, then sign in",
               cmd_provision)  # fmt: skip
    technician("echo", "echo test (0820/301) to the host", cmd_echo)
    p = technician("status", "what the running agent is doing", cmd_status)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = technician("journal", "the journal's timeline: transactions, recoveries, events",
                   cmd_journal)  # fmt: skip
    p.add_argument("--since", help="only since: 30m, 2h, 1d, an ISO time, or epoch seconds")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = technician("params", "parameters, CA keys and IC parameters the host sent", cmd_params)
    p.add_argument("--json", action="store_true", help="print JSON")
    config = sub.add_parser("config", help="configuration tools").add_subparsers(
        dest="config_command", metavar="ACTION", required=True
    )
    p = config.add_parser("check", help="validate the configuration and show what is in effect")
    p.add_argument("--config", type=Path, help=f"configuration file (default {DEFAULT_CONFIG})")
    p.set_defaults(handler=cmd_config_check)

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
    p.set_defaults(handler=cmd_selftest)

    p = sub.add_parser(
        "demo", help="the agent at work on simulators: a 97 recovered, then one escalated"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show the agent's log too")
    p.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    from agent.wire.mac import SoftwareDesMissing

    try:
        return handler(args)
    except (UsageError, SoftwareDesMissing) as exc:
        print(f"agent {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `agent journal | head`: the reader has all it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
