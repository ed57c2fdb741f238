"""Which journal events the fleet hears of, as what kind and with which stable code (DESIGN.md
section 14): a 97, the recovery that followed, the terminal becoming unregistered, a request
refused while the terminal stays registered, a stuck reversal, a failed periodic self-check, a
completed download (a master key's too), a damaged journal, an operator's command.
:func:`forward` runs inside the journal's commit, so an event and its telemetry are written
together or not at all. Its details are the journal's, which are masked already; nothing else
is added."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The journal's event of a host's refusal; one of a 97 is the fleet's "97".
REFUSED = "recovery.refused"
KINDS = ("97", "recovered", "unregistered", "request-refused", "reversal-stuck",
         "selftest-failed", "parameters-downloaded", "journal-damaged", "command")  # fmt: skip


def forwarder(
    terminal: Callable[[], tuple[str, str]],
) -> Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]] | None]:
    """:func:`forward`, each event told with the TID and MID of ``terminal()`` when it is
    recorded (section 14: "the TID, MID and the acquirer are in every payload"; a TID changes
    with re-provisioning, and an event may wait in the outbox across one)."""

    def told(kind: str, detail: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        forwarded = forward(kind, detail)
        if forwarded is None:
            return None
        tid, mid = terminal()
        return forwarded[0], {**forwarded[1], "tid": tid, "mid": mid}

    return told


def forward(kind: str, detail: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(telemetry kind, {"code": stable code, "detail": what the fleet is told}) for journal
    event ``kind``, or None when the fleet need not hear of it."""
    told = _told(kind, detail)
    if told is None:
        return None
    kind, code, shown = told
    return kind, {"code": code, "detail": shown}


def _told(kind: str, detail: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    if kind == REFUSED and detail.get("code") == "97":
        return "97", "host.97", {"code": "97", "text": detail.get("text", "")}
    if kind == "recovery.recovered":  # the timeline's summary: what it took, how long
        shown = {key: detail.get(key) for key in ("code", "seconds", "remedies")}
        return "recovered", "recovery.recovered", shown
    if kind == "recovery.registered-again":
        return "recovered", "recovery.registered-again", {"why": detail.get("why", "")}
    if kind == "recovery.unregistered":
        if detail.get("retold"):  # a new cause only: the state says it, and its since stays
            return None
        shown = {
            "cause_text": detail.get("message_en", ""),
            "cause_zh": detail.get("message_zh", ""),
        }
        return "unregistered", str(detail.get("cause") or "host.refused"), shown
    if kind == "request-refused":  # the terminal stays registered: the host refused one request
        keys = ("finding", "code", "class", "tusn", "a2", "repeated", "message_en")
        code = str(detail.get("finding") or "request.refused")
        return kind, code, {key: detail.get(key) for key in keys}
    if kind == "reversal-stuck":
        return kind, "reversal.stuck", detail
    if kind == "light-check" and str(detail.get("result", "")).startswith("fail"):
        code = f"{detail.get('check')}.{detail.get('finding') or 'failed'}"
        return (
            "selftest-failed",
            code,
            {"check": detail.get("check"), "result": detail.get("result")},
        )
    if kind == "parameters-downloaded":
        return kind, "session.parameters-downloaded", detail
    if kind == "tmk-download" and detail.get("outcome") == "loaded":
        # section 18: "reported to the fleet", whatever ran it (a recovery, a sign-in whose
        # 0810 carried the key); of the pinned kinds, the download one. The KCV, never a key;
        # a failure is told by what it leaves (the recovery's outcome, the unregistered state)
        shown = {key: detail.get(key) for key in ("form", "kcv", "detail")}
        return "parameters-downloaded", "keys.tmk-downloaded", shown
    if kind == "journal-damaged":
        return kind, "storage.journal-damaged", detail
    if kind == "command":  # an operator's command and what became of it
        return kind, f"command.{detail.get('cmd', '?')}", detail
    return None
