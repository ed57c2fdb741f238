"""Which journal events the fleet hears of, and as what (DESIGN.md section 14): a 97, the
recovery that followed, the terminal becoming unregistered, a request refused while the terminal
stays registered, a stuck reversal, a failed periodic
self-check, a completed download. :func:`forward` runs inside the journal's commit, so an event
and its telemetry are written together or not at all. Its details are the journal's, which are
masked already; nothing else is added."""

from __future__ import annotations

from typing import Any

KINDS = ("97", "recovered", "unregistered", "request-refused", "reversal-stuck",
         "selftest-failed", "parameters-downloaded", "journal-damaged")  # fmt: skip


def forward(kind: str, detail: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(telemetry kind, detail) for journal event ``kind``, or None when the fleet need not
    hear of it."""
    if kind == "recovery.refused" and detail.get("code") == "97":
        return "97", {"code": "97", "text": detail.get("text", "")}
    if kind == "recovery.recovered":  # the timeline's summary: what it took, how long
        return "recovered", {key: detail.get(key) for key in ("code", "seconds", "remedies")}
    if kind == "recovery.registered-again":
        return "recovered", {"why": detail.get("why", "")}
    if kind == "recovery.unregistered":
        return "unregistered", {"cause": detail.get("message_en", ""),
                                "cause_zh": detail.get("message_zh", "")}  # fmt: skip
    if kind == "request-refused":  # the terminal stays registered: the host refused one request
        keys = ("finding", "code", "class", "tusn", "a2", "repeated", "message_en")
        return kind, {key: detail.get(key) for key in keys}
    if kind == "reversal-stuck":
        return "reversal-stuck", detail
    if kind == "light-check" and str(detail.get("result", "")).startswith("fail"):
        return "selftest-failed", {"check": detail.get("check"), "result": detail.get("result")}
    if kind in ("parameters-downloaded", "journal-damaged"):
        return kind, detail
    return None
