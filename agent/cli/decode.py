"""agent decode HEX|-: a frame or message, field by field."""

from __future__ import annotations

import argparse
import sys

from agent.cli.common import (
    EXIT_OK,
    UsageError,
    wire_profile,
)
from agent.cli.render import print_json


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

    profile = wire_profile(args)
    data = _read_hex(sys.stdin.read() if args.hex == "-" else args.hex)
    layout = None if args.frame == "auto" else Layout(args.frame)
    try:
        frame = decode_frame(data, layout, profile)
    except DecodeError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print_json(describe_frame(frame, profile))
    else:
        print(render_frame(frame, profile))
    return EXIT_OK
