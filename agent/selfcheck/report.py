"""The self-check as a technician reads it (one line per check, what to do under it) and as the
pinned JSON of DESIGN.md section 6."""

from __future__ import annotations

import json
import os
import unicodedata
from typing import Any

from agent.selfcheck import NAMES, Report
from agent.selfcheck.base import Status

MARKS = {Status.OK: "[✓]", Status.WARN: "[!]", Status.FAIL: "[✗]", Status.SKIP: "[-]"}


def default_language(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """``zh`` when the locale says Chinese, else ``en``."""
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(variable, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


def _columns(text: str) -> int:
    """Terminal columns: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def as_json(report: Report, lang: str) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "duration_ms": report.duration_ms,
        "checks": [
            {
                "id": c.id,
                "status": c.status.value,
                "summary": c.summary(lang),
                "detail": c.detail,
                "remedy": c.remedy(lang) if c.remedy else "",
            }
            for c in report.checks
        ],
    }


def as_text(report: Report, lang: str, title: str) -> str:
    width = max((_columns(NAMES[c.id](lang)) for c in report.checks), default=0)
    lines = [title]
    for c in report.checks:
        name = NAMES[c.id](lang)
        pad = " " * (width - _columns(name))
        lines.append(f"{MARKS[c.status]} {name}{pad}  {c.summary(lang)}")
        if c.remedy and c.status in (Status.WARN, Status.FAIL):
            lines.append(f"    → {c.remedy(lang)}")
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


def dumps(report: Report, lang: str) -> str:
    return json.dumps(as_json(report, lang), ensure_ascii=False)
