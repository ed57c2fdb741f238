"""agent selftest: the self-check (DESIGN.md section 6)."""

from __future__ import annotations

import argparse
import sys

from agent.cli import render
from agent.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    ask_agent,
    load_config,
    not_permitted,
)


def cmd_selftest(args: argparse.Namespace) -> int:
    import asyncio
    import datetime

    from agent.selfcheck import Report, checks
    from agent.selfcheck.base import CheckResult
    from agent.selfcheck.local import run_local
    from agent.selfcheck.report import ASCII_MARKS, MARKS, Style, as_text, dumps
    from drivers.loading import DriverError

    only = [part for part in (args.only or "").split(",") if part] or None
    known = checks()
    for check_id in only or []:
        if check_id not in known:
            raise UsageError(f"--only {check_id}: no such check; expected {', '.join(known)}")
    config = load_config(args)
    chinese = render.shows_chinese()
    lang = render.language(args.lang, shown=not args.json)
    with render.Progress("正在自检" if lang == "zh" and chinese else "self-check running"):
        answer = ask_agent(config, {"cmd": "selftest", "only": only})
        if answer is not None:
            results = [CheckResult.from_json(c) for c in answer["checks"]]
            report = Report(results, answer["duration_ms"])
            where = ("asked the running agent", "已询问运行中的服务")
        else:
            try:
                report = asyncio.run(run_local(config, only))
            except PermissionError as exc:  # the state directory is closed to this user
                what = exc.filename or exc
                raise UsageError(f"no agent running, and {not_permitted(what)}") from None
            except DriverError as exc:  # the configured module driver does not start
                raise UsageError(f"no agent running, and {exc}") from None
            where = ("no agent running: checked directly", "服务未运行：直接检查")
    tid = config.terminal.tid
    if args.json:
        print(dumps(report, lang, tid, ensure_ascii=not chinese))
    else:
        when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        dash = "—" if render.encodes("—") else "-"
        title = (
            f"pos-agent 自检 {dash} 终端号 {tid or '-'} {dash} {when}（{where[1]}）"
            if lang == "zh"
            else f"pos-agent self-check {dash} TID {tid or '-'} {dash} {when} ({where[0]})"
        )
        style = Style(
            marks=MARKS if render.encodes("".join(MARKS.values())) else ASCII_MARKS,
            arrow="→" if render.encodes("→") else "->",
            colour=render.colour_wanted(sys.stdout),
        )
        print(as_text(report, lang, title, style))
    return EXIT_OK if report.ok else EXIT_FAILED
