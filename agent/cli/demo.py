"""agent demo: the agent at work on the simulators."""

from __future__ import annotations

import argparse


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(args.verbose)
