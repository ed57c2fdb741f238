"""The ``agent`` command line (DESIGN.md section 11): one module per command, the parser, and
``main``, its one error exit."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from agent.cli import render
from agent.cli.common import EXIT_OK, EXIT_USAGE, UsageError
from agent.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    render.prepare_streams()  # before the parser: --help has Chinese in it
    parser = build_parser()
    args = parser.parse_args(argv)
    target: str | None = getattr(args, "handler", None)
    if target is None:
        parser.print_help()
        return EXIT_USAGE
    module, _, function = target.partition(":")
    handler: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(f"agent.cli.{module}"), function
    )
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
