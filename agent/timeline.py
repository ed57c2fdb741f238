"""The journal as a timeline a technician reads: events and transactions in time order, one line
each (``agent journal`` and the demo)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any

from agent.journal import Journal
from agent.wire import codes


def _code(code: str | None) -> str:
    if not code:
        return "no answer"
    return f"{code} ({codes.lookup(code).en})" if codes.is_code(code) else code


def _event_text(event: dict[str, Any]) -> str:
    kind = event["kind"]
    match kind:
        case "signed-in":
            kcvs = ", ".join(f"{k} {v}" for k, v in event.get("kcvs", {}).items())
            return f"signed in as TID {event.get('tid') or '?'} (scheme {event['scheme']}), {kcvs}"
        case "recovery.refused":
            return f"host refused: {_code(event['code'])}"
        case "recovery.self-check":
            results = "; ".join(event["results"])
            return f"self-check in {event['duration_ms']} ms: {results}"
        case "recovery.plan":
            return "plan: " + ", then ".join(event["remedies"])
        case "recovery.remedy":
            outcome = "done" if event["ok"] else "failed"
            return f"remedy {event['remedy']} {outcome}: {event['detail']}"
        case "recovery.retried":
            return f"retried after {event['after']}: {_code(event['code'])}"
        case "recovery.recovered":
            return f"recovered: {_code(event['code'])}, {event['seconds']} s after the refusal"
        case "recovery.unregistered":
            return f"UNREGISTERED: {event['message_en']}"
        case "request-refused":
            again = ", again: no sign-in" if event.get("repeated") else ""
            return (
                f"{event['class']} refused with {_code(event['code'])}, the terminal stays "
                f"registered ({event['finding']}{again}): {event['message_en']}"
            )
        case "tmk-download":
            kcv = f", KCV {event['kcv']}" if event.get("kcv") else ""
            return (
                f"master-key download ({event['form']}): {event['outcome']}{kcv}: {event['detail']}"
            )
        case "recovery.registered-again":
            return f"registered again: {event['why']}"
        case "reversal-queued":
            return f"reversal queued (reason {event['reason']})"
        case "reversal-confirmed":
            return f"reversal confirmed by the host ({_code(event['response_code'])})"
        case "local-answer":
            return f"answered {event['mti']} locally with {event['code']}: {event['reason']}"
    details = ", ".join(f"{k} {v}" for k, v in event.items() if k not in ("at", "kind"))
    return f"{kind}: {details}" if details else kind


def _transaction_text(row: dict[str, Any]) -> str:
    request = json.loads(row["request"])["fields"]
    amount = request.get("4")
    money = f" {int(amount) / 100:.2f} CNY" if amount and amount.isdigit() else ""
    pan = f" card {request['2']}" if "2" in request else ""
    return (
        f"{row['mti']} STAN {row['stan']}{money}{pan}: {row['state']}"
        + (f", {_code(row['response_code'])}" if row["response_code"] else "")
        + (f" ({row['detail']})" if row["detail"] else "")
    )


def entries(journal: Journal, since: float = 0.0) -> list[dict[str, Any]]:
    """Events and transactions since ``since`` (epoch seconds), oldest first."""
    merged = [
        {"at": e["at"], "kind": e["kind"], "text": _event_text(e)} for e in journal.events(since)
    ]
    merged += [
        {"at": t["at"], "kind": "transaction", "text": _transaction_text(t)}
        for t in journal.transactions(since)
    ]
    return sorted(merged, key=lambda entry: entry["at"])


def render(timeline: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{datetime.fromtimestamp(e['at']).strftime('%m-%d %H:%M:%S.%f')[:-3]}  {e['text']}"
        for e in timeline
    )


def parse_since(text: str, now: float | None = None) -> float:
    """``30m``, ``2h``, ``1d``, ``90s``, an ISO date or time, or epoch seconds."""
    now = time.time() if now is None else now
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return now - float(match.group(1)) * unit
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a duration like 30m, 2h, 1d, an ISO time "
            "like 2026-11-25T09:00, or epoch seconds"
        ) from None
