"""The ``agent`` command line (DESIGN.md section 11)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from agent import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the person at the keyboard: printed as one line, exit 2."""


def _print_json(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


# ------------------------------------------------------------------------------------ commands


def cmd_explain(args: argparse.Namespace) -> int:
    from agent.wire import codes

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

    data = _read_hex(sys.stdin.read() if args.hex == "-" else args.hex)
    layout = None if args.frame == "auto" else Layout(args.frame)
    try:
        frame = decode_frame(data, layout)
    except DecodeError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        _print_json(describe_frame(frame))
    else:
        print(render_frame(frame))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo()


# ------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent",
        description="pos-agent: keeps a POS terminal registered with its acquirer "
        "(diagnoses and repairs response 97, 终端未登记).",
    )
    parser.add_argument("--version", action="version", version=f"pos-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("explain", help="explain a response code (field 39)")
    p.add_argument("code", help="two-character response code, e.g. 97")
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
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_decode)

    p = sub.add_parser("demo", help="show the agent at work on built-in examples")
    p.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except UsageError as exc:
        print(f"agent {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
