"""agent journal: the journal's timeline."""

from __future__ import annotations

import argparse
import sys

from agent.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    ask_agent,
    load_config,
    not_permitted,
)
from agent.cli.render import print_json


def cmd_journal(args: argparse.Namespace) -> int:
    import os

    from agent import paths, timeline
    from agent.journal import Journal, JournalError, unseen_changes

    config = load_config(args)
    try:
        since = timeline.parse_since(args.since) if args.since else 0.0
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    answer = ask_agent(config, {"cmd": "journal", "since": since})
    if answer is not None:  # the service's own connection sees every change
        entries = answer["entries"]
        if answer.get("left_out") and entries:
            if since:
                which, more = "newer", f"--since {entries[-1]['at']} shows them"
            else:
                which, more = "older", "--since TIME shows those from TIME on"
            print(f"agent journal: {len(entries)} entries; {answer['left_out']} {which} ones "
                  f"not shown: {more}", file=sys.stderr)  # fmt: skip
    else:
        path = paths.journal_path(config)
        try:
            present, readable = path.exists(), os.access(path, os.R_OK)
        except PermissionError:  # its directory is closed to this user
            present, readable = True, False
        if not present:
            print(f"agent journal: no journal at {path}", file=sys.stderr)
            return EXIT_FAILED
        if not readable:  # said so, not as SQLite's "unable to open database file"
            print(f"agent journal: no agent running, and {not_permitted(path)}", file=sys.stderr)
            return EXIT_FAILED
        wal = unseen_changes(path)  # a pending sale (a reversal to be) may be among them
        unseen = (
            f"the latest changes, in {wal} (the service stopped without taking them into the "
            "journal file), are not shown: the service takes them in when it starts"
            if wal is not None
            else ""
        )
        try:
            journal = Journal(path, read_only=True)  # a look: it creates and changes nothing
            entries = timeline.entries(journal, since)
            journal.close()
        except JournalError as exc:
            print(f"agent journal: {exc}", file=sys.stderr)
            if unseen:
                print(f"agent journal: {unseen}", file=sys.stderr)
            return EXIT_FAILED
        if unseen:
            print(f"agent journal: {unseen}", file=sys.stderr)
    if args.json:
        print_json(entries)
    else:
        from agent.cli import render

        lang = render.language(args.lang)
        nothing = "（此后无记录）" if lang == "zh" else "(nothing since then)"
        print(timeline.render(entries, lang) or nothing)
    return EXIT_OK
