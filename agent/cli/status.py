"""agent status: what the running agent is doing; exits like ``systemctl status``."""

from __future__ import annotations

import argparse
import sys

from agent.cli import render
from agent.cli.common import (
    EXIT_FAILED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    ask_agent,
    control_path,
    load_config,
)
from agent.cli.render import print_json


def cmd_status(args: argparse.Namespace) -> int:
    import datetime

    try:
        config = load_config(args)
        answer = ask_agent(config, {"cmd": "status"})
    except UsageError as exc:
        if not args.json:
            raise
        # --json always prints an object: a script learns why there is no status, and a
        # person reads it on stderr as without --json ("running": null: it cannot be told)
        print(f"agent status: {exc}", file=sys.stderr)
        print_json({"running": None, "state": "unknown", "registered": False,
                    "error": str(exc)})  # fmt: skip
        return EXIT_USAGE
    if answer is None:
        where = control_path(config)
        if args.json:
            print_json({"running": False, "state": "not-running", "registered": False,
                         "tid": config.terminal.tid, "control_socket": str(where)})  # fmt: skip
        else:
            print(f"agent status: no agent running (control socket {where})", file=sys.stderr)
        return EXIT_NOT_RUNNING
    answer.pop("ok", None)
    code = EXIT_OK if answer.get("registered") else EXIT_FAILED  # as `systemctl status`
    if args.json:
        print_json({"running": True, **answer})
        return code
    host = answer["host"]
    signed = answer["signed_in"]
    stuck = answer.get("reversals_stuck", 0)
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
        f"reversals   {answer['reversals_queued']} queued"
        + (f" ({stuck} stuck after reversal.attempts tries)" if stuck else "")
        + f", {answer.get('reversals_to_recheck', 0)} closed by 12/25 waiting for their recheck",
    ]
    refusal = answer["last_refusal"]
    if refusal:
        when = datetime.datetime.fromtimestamp(refusal["at"])
        lines.append(f"last 97     {refusal['code']} at {when:%Y-%m-%d %H:%M:%S}")
    refused = answer.get("refused_requests") or {}
    if refused.get("by_finding"):
        counts = ", ".join(f"{n} {finding}" for finding, n in refused["by_finding"].items())
        lines.append(f"refused     {counts} (single requests; the terminal stays registered)")
        told = (refused.get("last") or {}).get("message") or {}
        if told:
            lines.append(f"            {told['zh'] if render.shows_chinese() else told['en']}")
    if answer["message"]:
        if render.shows_chinese():
            lines.append(f"message     {answer['message']['zh']}")
            lines.append(f"            {answer['message']['en']}")
        else:
            lines.append(f"message     {answer['message']['en']}")
    print("\n".join(lines))
    return code
