"""The fleet's payloads (DESIGN.md section 14) read as untrusted data: a payload over
:data:`MAX_PAYLOAD` is not read at all, one that is not a JSON object (200,000 levels of nesting
that make the decoder raise RecursionError, invalid UTF-8, a list) or whose fields have the wrong
types is unreadable, and each reader answers None for it. A field that is missing takes its
default (an older agent sends fewer), a field that is read must have its type; the fields no one
here reads are not looked at."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_PAYLOAD = 64 * 1024  # bytes: a state is about 400, a full self-check a few thousand
HOST_ANSWER_CHECKS = ("network",)  # the self-check whose failure is the host's answer, not ours
# findings that are the host's answer too: the TUSN refused, which a host-side fault of the
# acquirer's TUSN records makes every terminal's at once (the registration check keeps the
# last such refusal a day)
HOST_ANSWER_FINDINGS = ("registration.tusn-refused",)


class Unreadable(ValueError):
    """A payload of the wrong shape; the text says what is wrong (for a debug line)."""


def decode(payload: bytes) -> dict[str, Any]:
    """The JSON object in ``payload``."""
    if len(payload) > MAX_PAYLOAD:
        raise Unreadable(f"{len(payload)} bytes, over {MAX_PAYLOAD}")
    try:
        value = json.loads(payload)
    except RecursionError:  # nesting deeper than the decoder goes
        raise Unreadable("nested too deeply") from None
    except ValueError as exc:  # not JSON, not UTF-8, a number of 5,000 digits
        raise Unreadable(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(value, dict):
        raise Unreadable(f"a JSON {type(value).__name__}, not an object")
    return value


def _field(message: dict[str, Any], key: str, kinds: type | tuple[type, ...], default: Any) -> Any:
    value = message.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise Unreadable(f"{key}: a boolean")  # bool is an int to isinstance
    if not isinstance(value, kinds):
        raise Unreadable(f"{key}: a {type(value).__name__}")
    return value


def _text(message: dict[str, Any], key: str) -> str:
    return _field(message, key, str, "")


def _count(message: dict[str, Any], key: str) -> int:
    value = _field(message, key, int, 0)
    if value < 0:
        raise Unreadable(f"{key}: negative")
    return value


def _time(message: dict[str, Any], key: str) -> float | None:
    """Epoch seconds of an ISO 8601 time; one without an offset is taken as UTC."""
    text = _field(message, key, str, None)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        raise Unreadable(f"{key}: not an ISO 8601 time") from None


@dataclass(frozen=True)
class Acquirer:
    host: str  # the configured primary endpoint HOST:PORT: terminals of one acquirer share it
    nii: str


def _acquirer(message: dict[str, Any]) -> Acquirer | None:
    raw = _field(message, "acquirer", dict, None)
    if raw is None:
        return None
    host = _text(raw, "host")
    nii = _field(raw, "nii", (str, int), "")
    return Acquirer(host, str(nii)) if host else None


@dataclass(frozen=True)
class State:
    """``<prefix>/<serial>/state``, retained."""

    serial: str
    tid: str
    mid: str
    acquirer: Acquirer | None
    state: str  # registered, recovering, unregistered, offline
    cause: str  # a stable code, e.g. host.97-after-signin ("" when none)
    since: str  # as sent, for display
    since_at: float | None  # the same in epoch seconds
    last_97: float | None
    reversals_stuck: int


def read_state(serial: str, payload: bytes) -> State:
    message = decode(payload)
    state = _text(message, "state")
    if not state:
        raise Unreadable("no state")
    return State(
        serial=serial,
        tid=_text(message, "tid"),
        mid=_text(message, "mid"),
        acquirer=_acquirer(message),
        state=state,
        cause=_text(message, "cause"),
        since=_text(message, "since"),
        since_at=_time(message, "since"),
        last_97=_time(message, "last_97"),
        reversals_stuck=_count(message, "reversals_stuck"),
    )


@dataclass(frozen=True)
class Event:
    """``<prefix>/<serial>/event``: one of the terminal's events."""

    kind: str  # 97, recovered, unregistered, request-refused, ...
    at: float | None  # when the terminal recorded it (an event from its outbox may be old)
    acquirer: Acquirer | None


def read_event(payload: bytes) -> Event:
    message = decode(payload)
    kind = _text(message, "kind")
    if not kind:
        raise Unreadable("no kind")
    return Event(kind=kind, at=_time(message, "at"), acquirer=_acquirer(message))


def read_selftest(payload: bytes) -> bool:
    """Whether the retained self-check (DESIGN.md section 6) is healthy: no failing check other
    than the host's answer (a host that refuses everyone fails that one on every terminal)."""
    message = decode(payload)
    checks = _field(message, "checks", list, None)
    if checks is None:
        raise Unreadable("no checks")
    healthy = True
    for check in checks:
        if not isinstance(check, dict):
            raise Unreadable("a check that is not an object")
        hosts = _text(check, "id") in HOST_ANSWER_CHECKS
        hosts = hosts or _text(check, "finding") in HOST_ANSWER_FINDINGS
        if _text(check, "status") == "fail" and not hosts:
            healthy = False
    return healthy


@dataclass(frozen=True)
class Incident:
    """``<prefix>/incidents/<host>``, retained, as a watcher publishes it."""

    nii: str
    opened: float
    terminals: int
    evidence: tuple[str, ...]


def read_incident(payload: bytes) -> Incident:
    message = decode(payload)
    opened = _time(message, "opened")
    if opened is None:
        raise Unreadable("no opened")
    evidence = _field(message, "evidence", list, [])
    if not all(isinstance(serial, str) for serial in evidence):
        raise Unreadable("evidence: not a list of serials")
    acquirer = _acquirer(message)
    return Incident(
        nii=acquirer.nii if acquirer else "",
        opened=opened,
        terminals=_count(message, "terminals"),
        evidence=tuple(evidence[:10]),
    )


def incident_message(host: str, incident: Incident) -> dict[str, Any]:
    """What a watcher publishes on ``<prefix>/incidents/<host>``."""
    return {
        "acquirer": {"host": host, "nii": incident.nii},
        "kind": "host-side",
        "opened": iso(incident.opened),
        "terminals": incident.terminals,
        "evidence": list(incident.evidence),
    }


@dataclass(frozen=True)
class Result:
    """``<prefix>/<serial>/cmd/<id>/result``: the agent's answer to an operator's command."""

    ok: bool
    detail: Any
    at: str


def read_result(payload: bytes) -> Result:
    message = decode(payload)
    ok = message.get("ok")
    if not isinstance(ok, bool):
        raise Unreadable("ok: not a boolean")
    return Result(ok=ok, detail=message.get("detail"), at=_text(message, "at"))


def iso(moment: float) -> str:
    """ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")
