"""The fleet's topics (DESIGN.md section 14), under ``telemetry.topic_prefix``:
``<prefix>/<serial>/state|selftest|event``, ``<prefix>/<serial>/cmd/<id>[/result]`` and
``<prefix>/incidents/<acquirer host>``. A topic says whose a message is: the serial (or host) is
read from the topic, which the broker's ACLs can tie to a client, not from the payload."""

from __future__ import annotations

from dataclasses import dataclass

INCIDENTS = "incidents"  # the level under the prefix that holds incidents, not a serial
TERMINAL_KINDS = ("state", "selftest", "event")
LEVEL_MAX = 255  # characters of a serial or a host: longer is not one of ours


def is_level(text: str) -> bool:
    """Whether ``text`` can be one topic level of ours: printable, no space, no ``/``, ``+``,
    ``#`` (which would make it several levels or a wildcard), not empty, not too long."""
    return (
        0 < len(text) <= LEVEL_MAX
        and text.isprintable()
        and not any(c.isspace() or c in "/+#" for c in text)
    )


@dataclass(frozen=True)
class Topic:
    kind: str  # "state", "selftest", "event" or "incident"
    key: str  # the terminal's serial, or the incident's acquirer host


def parse(prefix: str, topic: str) -> Topic | None:
    """What ``topic`` is, or None when it is none of the fleet's."""
    if not topic.startswith(prefix + "/"):
        return None
    levels = topic[len(prefix) + 1 :].split("/")
    if len(levels) != 2 or not is_level(levels[0]) or not is_level(levels[1]):
        return None
    first, second = levels
    if first == INCIDENTS:
        return Topic("incident", second)
    if second in TERMINAL_KINDS:
        return Topic(second, first)
    return None


def incident(prefix: str, host: str) -> str:
    return f"{prefix}/{INCIDENTS}/{host}"


def command(prefix: str, serial: str, command_id: str) -> str:
    return f"{prefix}/{serial}/cmd/{command_id}"


def result(prefix: str, serial: str, command_id: str) -> str:
    return f"{command(prefix, serial, command_id)}/result"


def states(prefix: str) -> str:
    return f"{prefix}/+/state"


def selftests(prefix: str) -> str:
    return f"{prefix}/+/selftest"


def events(prefix: str) -> str:
    return f"{prefix}/+/event"


def incidents(prefix: str) -> str:
    return f"{prefix}/{INCIDENTS}/+"
