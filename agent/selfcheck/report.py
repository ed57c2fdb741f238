"""The self-check as a technician reads it (one line per check, what to do under it) and as the
pinned JSON of DESIGN.md section 6."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent import __version__
from agent.display import columns
from agent.selfcheck import NAMES, Report
from agent.selfcheck.base import CheckResult, Status

MARKS = {Status.OK: "[✓]", Status.WARN: "[!]", Status.FAIL: "[✗]", Status.SKIP: "[-]"}
# for a console that cannot show ✓ and ✗ (ASCII, Latin-1)
ASCII_MARKS = {Status.OK: "[ OK ]", Status.WARN: "[WARN]", Status.FAIL: "[FAIL]",
               Status.SKIP: "[SKIP]"}  # fmt: skip
COLOURS = {Status.OK: "32", Status.WARN: "33", Status.FAIL: "31", Status.SKIP: "2"}  # SGR codes


@dataclass(frozen=True)
class Style:
    """How the text report is drawn on this console."""

    marks: dict[Status, str] = field(default_factory=lambda: MARKS)
    arrow: str = "→"
    colour: bool = False

    def mark(self, status: Status) -> str:
        text = self.marks[status]
        return f"\033[{COLOURS[status]}m{text}\033[0m" if self.colour else text


def finding_code(check: CheckResult) -> str:
    """The report's ``finding``: the check's stable code, e.g. ``keys.kcv-mismatch``."""
    return check.code


def as_json(report: Report, lang: str, tid: str, at: datetime | None = None) -> dict[str, Any]:
    """The pinned report of DESIGN.md section 6."""
    return {
        "ok": report.ok,
        "duration_ms": report.duration_ms,
        "tid": tid,
        "version": __version__,
        "at": (at or datetime.now().astimezone()).isoformat(timespec="seconds"),
        "checks": [
            {
                "id": c.id,
                "status": c.status.value,
                "finding": finding_code(c),
                "summary": c.summary(lang),
                "detail": c.detail,
                "remedy": c.remedy(lang) if c.remedy else "",
            }
            for c in report.checks
        ],
    }


def as_text(report: Report, lang: str, title: str, style: Style | None = None) -> str:
    """One line per check; under a warning or failure its technical detail (on a line of its
    own: it may hold a system's English error text) and what to do."""
    style = style or Style()
    width = max((columns(NAMES[c.id](lang)) for c in report.checks), default=0)
    lines = [title]
    for c in report.checks:
        name = NAMES[c.id](lang)
        pad = " " * (width - columns(name))
        lines.append(f"{style.mark(c.status)} {name}{pad}  {c.summary(lang)}")
        if c.status in (Status.WARN, Status.FAIL):
            if c.detail:
                lines.append(f"    {c.detail}")
            if c.remedy:
                lines.append(f"    {style.arrow} {c.remedy(lang)}")
    failed = sum(c.status is Status.FAIL for c in report.checks)
    warned = sum(c.status is Status.WARN for c in report.checks)
    seconds = report.duration_ms / 1000
    if lang == "zh":
        verdict = "正常" if not failed else f"{failed} 项失败"
        lines.append(f"结论：{verdict}，{warned} 项警告（用时 {seconds:.1f} 秒）")
    else:
        verdict = "healthy" if not failed else f"{failed} failed"
        lines.append(f"Result: {verdict}, {warned} warning(s) ({seconds:.1f} s)")
    return "\n".join(lines)


def dumps(report: Report, lang: str, tid: str, ensure_ascii: bool = False) -> str:
    return json.dumps(as_json(report, lang, tid), ensure_ascii=ensure_ascii)
