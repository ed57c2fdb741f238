"""The terminal as the fleet sees it (DESIGN.md section 14): the retained state message, and the
topics it, the events, the commands and the acquirer's incident go to. Topics are keyed by the
module serial, which never changes (a re-provisioned TID would leave a ghost behind)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.config import Config
from agent.version import VERSION as __version__

STATES = ("registered", "recovering", "unregistered", "offline")
# An operator command's id, the topic's <id>: what `agent fleet send` makes (32 hex digits) and
# what another operator tool would (a UUID, a counter), at most 64 of these characters. Any other
# id is neither carried out nor answered: it would go as it is into the result's topic, the
# journal, the log and a technician's terminal (a megabyte, an escape sequence, a newline).
COMMAND_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
COMMAND_ID_MAX = 64


@dataclass(frozen=True)
class Topics:
    prefix: str
    serial: str

    @property
    def state(self) -> str:
        return f"{self.prefix}/{self.serial}/state"

    @property
    def selftest(self) -> str:
        return f"{self.prefix}/{self.serial}/selftest"

    @property
    def event(self) -> str:
        return f"{self.prefix}/{self.serial}/event"

    @property
    def commands(self) -> str:
        """Every operator command to this terminal (``cmd/<id>``)."""
        return f"{self.prefix}/{self.serial}/cmd/+"

    def command_id(self, topic: str) -> str | None:
        """The ``<id>`` of a command topic of this terminal; None for any other topic, and for
        a command whose id is not one (:data:`COMMAND_ID_CHARS`, :data:`COMMAND_ID_MAX`)."""
        rest = topic[len(self.command_head) :] if topic.startswith(self.command_head) else ""
        if not rest or len(rest) > COMMAND_ID_MAX or not COMMAND_ID_CHARS.issuperset(rest):
            return None
        return rest

    @property
    def command_head(self) -> str:
        """What the topic of every command to this terminal starts with."""
        return f"{self.prefix}/{self.serial}/cmd/"

    def result(self, command_id: str) -> str:
        return f"{self.prefix}/{self.serial}/cmd/{command_id}/result"

    def incident(self, acquirer_host: str) -> str:
        return f"{self.prefix}/incidents/{acquirer_host}"


def topic_level(text: str) -> str:
    """``text`` made safe as one topic level: no wildcard, separator, NUL or space (a serial
    from a module is printable ASCII, but the broker must never see a ``+`` from it, and the
    fleet's tools read no level with a space in it: ``PAX A920 01`` is ``PAX_A920_01``)."""
    cleaned = "".join(
        "_" if c in "+#/\0" or c.isspace() or not c.isprintable() else c for c in text.strip()
    )
    return cleaned or "unknown"


def acquirer_of(config: Config) -> dict[str, str]:
    """The acquirer as the fleet groups terminals: the configured primary ``HOST:PORT`` (the
    same for every terminal of it, whichever endpoint is in use) and the TPDU's NII."""
    primary = config.host.primary
    return {"host": str(primary) if primary else "", "nii": f"{config.wire.tpdu_destination:04X}"}


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment).astimezone().isoformat(timespec="seconds")


def cause_text(status: dict[str, Any]) -> str:
    """The sentence beside the cause code: the merchant's message when unregistered."""
    state = status["state"]
    refusal = status.get("last_refusal") or {}
    if state == "unregistered":
        message = status.get("message") or {}
        return message.get("en", "") or f"host answered {refusal.get('code')}"
    if state == "recovering":
        return f"host answered {refusal.get('code', '?')}; recovering"
    if state == "not-signed-in":
        return f"not signed in: {status['host'].get('last_error') or 'no sign-in yet'}"
    return ""


def fleet_state(status: dict[str, Any]) -> str:
    """``agent status``'s state in the fleet's words."""
    state = status["state"]
    return "recovering" if state == "not-signed-in" else state


@dataclass(frozen=True)
class Identity:
    """Who the terminal is to the fleet: the serial (the topics' key), its TUSN and the
    acquirer it belongs to."""

    serial: str
    tusn: str
    acquirer: dict[str, str]


def state_message(
    status: dict[str, Any],
    identity: Identity,
    since: float,
    last_97: float | None,
    dropped: int,
    now: float,
) -> dict[str, Any]:
    """The retained state, without ``seq`` (given when it is published)."""
    return {
        "serial": identity.serial,
        "tusn": identity.tusn,
        "tid": status["tid"],
        "mid": status["mid"],
        "acquirer": identity.acquirer,
        "state": fleet_state(status),
        "cause": status.get("cause", ""),
        "cause_text": cause_text(status),
        "since": iso(since),
        "last_97": iso(last_97),
        "reversals_queued": status["reversals_queued"],
        "reversals_stuck": status["reversals_stuck"],
        "outbox_dropped": dropped,
        "version": __version__,
        "at": iso(now),
    }


def offline(message: dict[str, Any], cause: str, now: float | None) -> dict[str, Any]:
    """The same terminal, offline: after a clean stop (``now``: since then), or as the will,
    which the broker publishes at a time nobody knows when the connection is made (``None``:
    ``since`` and ``last_97`` stay what they were, the fleet's last knowledge)."""
    since = iso(now) if now is not None else message.get("since")
    return {**message, "state": "offline", "cause": cause, "cause_text": "",
            "since": since, "at": iso(now)}  # fmt: skip
