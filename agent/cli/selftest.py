"""agent selftest: the self-check (DESIGN.md section 6)."""

from __future__ import annotations

import argparse

from agent.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    ask_agent,
    load_config,
)


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
    config = load_config(args)
    lang = args.lang or default_language()
    answer = ask_agent(config, {"cmd": "selftest", "only": only})
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
