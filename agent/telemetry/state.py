"""The terminal as the fleet sees it (DESIGN.md section 14): the retained state message, and the
topics it and the events go to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent import __version__

STATES = ("registered", "recovering", "unregistered", "offline")


@dataclass(frozen=True)
class Topics:
    state: str
    selftest: str
    event: str

    @classmethod
    def of(cls, prefix: str, terminal: str) -> Topics:
        return cls(f"{prefix}/{terminal}/state", f"{prefix}/{terminal}/selftest",
                   f"{prefix}/{terminal}/event")  # fmt: skip


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment).astimezone().isoformat(timespec="seconds")


def fleet_state(status: dict[str, Any]) -> tuple[str, str]:
    """(state, cause) of ``agent status``'s answer in the fleet's four words."""
    state = status["state"]
    refusal = status.get("last_refusal") or {}
    if state == "unregistered":
        message = status.get("message") or {}
        return "unregistered", message.get("en", "") or f"host answered {refusal.get('code')}"
    if state == "recovering":
        return "recovering", f"host answered {refusal.get('code', '?')}"
    if state == "not-signed-in":
        error = status["host"].get("last_error") or "no sign-in has succeeded yet"
        return "recovering", f"not signed in: {error}"
    return "registered", ""


def state_message(
    status: dict[str, Any],
    serial: str,
    since: float,
    last_97: float | None,
    dropped: int,
    now: float,
) -> dict[str, Any]:
    state, cause = fleet_state(status)
    return {
        "tid": status["tid"],
        "mid": status["mid"],
        "serial": serial,
        "state": state,
        "cause": cause,
        "since": iso(since),
        "last_97": iso(last_97),
        "reversals_queued": status["reversals_queued"],
        "reversals_stuck": status["reversals_stuck"],
        "outbox_dropped": dropped,
        "version": __version__,
        "at": iso(now),
    }


def offline(message: dict[str, Any], cause: str, now: float | None) -> dict[str, Any]:
    """The same terminal, offline: after a clean stop (``now``), or as the will, which the
    broker publishes at a time nobody knows when the connection is made (``None``)."""
    return {**message, "state": "offline", "cause": cause, "since": iso(now), "at": iso(now)}
