"""agent explain CODE: a response code, a finding or cause code (from the message catalogue), or
a header processing requirement."""

from __future__ import annotations

import argparse

from agent.cli import render
from agent.cli.common import EXIT_OK, UsageError
from agent.cli.render import print_json


def cmd_explain(args: argparse.Namespace) -> int:
    from agent.wire import codes

    if args.requirement is not None:
        if args.code is not None:
            raise UsageError("give a response code or --requirement, not both")
        return _explain_requirement(args.requirement, args.json)
    if args.code is None:
        raise UsageError("give a response code (e.g. 97) or --requirement N")
    if "." in args.code:
        return _explain_finding(args.code, args.json)
    try:
        rc = codes.lookup(args.code)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print_json(rc.as_dict())
        return EXIT_OK
    if render.shows_chinese():
        print(f"{rc.code}  {rc.zh}")
        print(f"    {rc.en}")
    else:  # the English line says it all on a console without Chinese
        print(f"{rc.code}  {rc.en}")
    print(f"category  {rc.category}")
    print(f"action    {rc.action_en}")
    if render.shows_chinese():
        print(f"处理      {rc.action_zh}")
    return EXIT_OK


def _explain_finding(code: str, as_json: bool) -> int:
    """A finding code of the self-check, of a refused request, or a cause code: what the
    message catalogue says it means and what to do."""
    from agent import messages

    try:
        meaning, action = messages.explain(code)
    except messages.CatalogueError:
        known = messages.explained()
        area = code.partition(".")[0] + "."
        alike = [c for c in known if c.startswith(area)]
        raise UsageError(f"unknown finding {code!r}; known: {', '.join(alike or known)}") from None
    if as_json:
        print_json({"finding": code, "meaning": meaning.to_json(), "action": action.to_json()})
        return EXIT_OK
    chinese = render.shows_chinese()
    print(f"{code}  {meaning.en}")
    if chinese:
        print(f"    {meaning.zh}")
    print(f"action    {action.en}")
    if chinese:
        print(f"处理      {action.zh}")
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
        print_json(rows if which == "all" else rows[0])
        return EXIT_OK
    for row in rows:
        print(f"{row['requirement']:>2}  host asks: {row['host_asks']}; agent: {row['agent_does']}")
    return EXIT_OK
