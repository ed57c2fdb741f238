"""The journal as a timeline a technician reads: events and transactions in time order, one line
each (``agent journal`` and the demo)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any

from agent import messages
from agent.journal import Journal
from agent.messages import Text
from agent.wire import codes


def _code(code: str | None) -> Text:
    """A response code with its meaning in both languages."""
    if not code:
        return messages.message("journal:no-answer")
    if codes.is_code(code):
        meaning = codes.lookup(code)
        return Text(f"{code} ({meaning.en})", f"{code}（{meaning.zh}）")
    return Text(code, code)


def _event_text(event: dict[str, Any]) -> Text:
    """One event in both languages, from the catalogue; what the event holds in English only
    (a remedy's technical detail, a reason) stays English in both, as a check's detail does."""
    kind = event["kind"]
    say = messages.message
    match kind:
        case "signed-in":
            kcvs = ", ".join(f"{k} {v}" for k, v in event.get("kcvs", {}).items())
            return say("journal:signed-in", tid=event.get("tid") or "?", scheme=event["scheme"],
                       kcvs=kcvs)  # fmt: skip
        case "recovery.refused":
            return say("journal:refused", code=_code(event["code"]))
        case "recovery.self-check":
            return say("journal:self-check", ms=event["duration_ms"],
                       results="; ".join(event["results"]))  # fmt: skip
        case "recovery.plan":
            return say("journal:plan", remedies=", then ".join(event["remedies"]))
        case "recovery.remedy":
            key = "journal:remedy-done" if event["ok"] else "journal:remedy-failed"
            return say(key, remedy=event["remedy"], detail=event["detail"])
        case "recovery.retried":
            return say("journal:retried", after=event["after"], code=_code(event["code"]))
        case "recovery.recovered":
            return say("journal:recovered", code=_code(event["code"]), seconds=event["seconds"])
        case "recovery.unregistered":
            told = Text(event["message_en"], event.get("message_zh") or event["message_en"])
            return say("journal:unregistered", message=told)
        case "request-refused":
            told = Text(event["message_en"], event.get("message_zh") or event["message_en"])
            key = "journal:request-refused-again" if event.get("repeated") else (
                "journal:request-refused")  # fmt: skip
            return say(key, cls=event["class"], code=_code(event["code"]),
                       finding=event["finding"], message=told)  # fmt: skip
        case "tmk-download":
            kcv = f", KCV {event['kcv']}" if event.get("kcv") else ""
            return say("journal:tmk-download", form=event["form"], outcome=event["outcome"],
                       kcv=kcv, detail=event["detail"])  # fmt: skip
        case "recovery.registered-again":
            return say("journal:registered-again", why=event["why"])
        case "reversal-queued":
            return say("journal:reversal-queued", reason=event["reason"])
        case "reversal-confirmed":
            return say("journal:reversal-confirmed", code=_code(event["response_code"]))
        case "local-answer":
            # a row of an older release has no finding
            finding = f" ({event['finding']})" if event.get("finding") else ""
            return say("journal:local-answer", mti=event["mti"], code=event["code"],
                       finding=finding, reason=event["reason"])  # fmt: skip
    details = ", ".join(f"{k} {v}" for k, v in event.items() if k not in ("at", "kind"))
    text = f"{kind}: {details}" if details else kind
    return Text(text, text)  # a kind of its own words: its name and what it holds


def _transaction_text(row: dict[str, Any]) -> Text:
    request = json.loads(row["request"])["fields"]
    amount = request.get("4")
    money = f" {int(amount) / 100:.2f} CNY" if amount and amount.isdigit() else ""
    pan = f" card {request['2']}" if "2" in request else ""
    answer = _code(row["response_code"]) if row["response_code"] else None
    return messages.message(
        "journal:transaction",
        mti=row["mti"],
        stan=row["stan"],
        money=money,
        card=pan,
        state=row["state"],
        answer=Text(f", {answer.en}", f"，{answer.zh}") if answer else messages.EMPTY,
        detail=f" ({row['detail']})" if row["detail"] else "",
    )


def entries(
    journal: Journal, since: float = 0.0, limit: int = -1, newest: bool = True
) -> list[dict[str, Any]]:
    """Events and transactions since ``since`` (epoch seconds), oldest first: ``text`` in
    English, ``text_zh`` in Chinese; only ``limit`` of them, if given: the newest, or with
    ``newest`` false the oldest."""
    events = journal.events(since, limit, newest)
    rows = journal.transactions(since, limit, newest)
    said = [(e["at"], e["kind"], _event_text(e)) for e in events]
    said += [(t["at"], "transaction", _transaction_text(t)) for t in rows]
    merged = [{"at": at, "kind": kind, "text": text.en, "text_zh": text.zh}
              for at, kind, text in said]  # fmt: skip
    merged.sort(key=lambda entry: entry["at"])
    if limit < 0:
        return merged
    return merged[-limit:] if newest else merged[:limit]


def render(timeline: list[dict[str, Any]], lang: str = "en") -> str:
    def text(entry: dict[str, Any]) -> str:
        return entry.get("text_zh") or entry["text"] if lang == "zh" else entry["text"]

    return "\n".join(
        f"{datetime.fromtimestamp(e['at']).strftime('%m-%d %H:%M:%S.%f')[:-3]}  {text(e)}"
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
