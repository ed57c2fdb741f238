"""``agent fleet send SERIAL COMMAND`` (DESIGN.md section 14): one operator command to one
terminal and its answer. The answer's topic is subscribed before the command is published (an
agent that answers at once is not missed); the command goes at QoS 1, not retained (a terminal
that comes back later must not find it), with a fresh id the agent refuses to run twice and an
expiry after which it refuses to run it at all."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from agent.config import TelemetryConfig
from agent.fleet import payloads, topics
from agent.fleet.subscription import Received, Subscription

log = logging.getLogger(__name__)

# What an agent runs (DESIGN.md section 14); nothing else is sent: no shell, key or money.
COMMANDS = ("selftest", "signin", "provision", "journal", "incident")


class NoAnswer(Exception):
    """No readable answer came in time; the text says what was heard."""


@dataclass(frozen=True)
class Sent:
    serial: str
    command_id: str
    message: dict[str, Any]
    result: payloads.Result


def validate(serial: str, command: str) -> None:
    """ValueError unless ``command`` is one an agent runs and ``serial`` can be a topic level."""
    if command not in COMMANDS:
        raise ValueError(f"{command!r} is not a command: one of {', '.join(COMMANDS)}")
    if not topics.is_level(serial):
        raise ValueError(f"{serial!r} is not a serial (one topic level: no space, /, + or #)")


def command_message(command: str, args: dict[str, Any], expires_in: float, now: float) -> dict:
    return {"cmd": command, "args": args, "expires": payloads.iso(now + expires_in)}


def send(
    settings: TelemetryConfig,
    broker: str,
    serial: str,
    command: str,
    args: dict[str, Any],
    expires_in: float,
    timeout: float,
) -> Sent:
    """Send ``command`` to the terminal ``serial`` and wait at most ``timeout`` seconds in all
    for its answer. Raises ValueError (see :func:`validate`), BrokerError or NoAnswer."""
    validate(serial, command)
    end = time.monotonic() + timeout
    command_id = uuid.uuid4().hex
    prefix = settings.topic_prefix
    answer = topics.result(prefix, serial, command_id)
    subscription = Subscription(settings, broker, [answer], "send")
    try:
        subscription.wait_subscribed(max(0.1, end - time.monotonic()))
        message = command_message(command, args, expires_in, time.time())
        subscription.publish(
            topics.command(prefix, serial, command_id),
            json.dumps(message).encode(),
            retain=False,
            timeout=max(0.1, end - time.monotonic()),
        )
        log.debug("sent %s to %s as %s", command, serial, command_id)
        unreadable = 0
        while (left := end - time.monotonic()) > 0:
            item = subscription.get(left)
            if not isinstance(item, Received) or not item.payload:
                continue
            try:
                return Sent(serial, command_id, message, payloads.read_result(item.payload))
            except payloads.Unreadable:
                unreadable += 1  # someone else's, or a broken agent: keep waiting
        unreadable += subscription.too_large
    finally:
        subscription.close()
    heard = f" ({unreadable} unreadable answer(s) skipped)" if unreadable else ""
    raise NoAnswer(
        f"no answer from {serial} within {timeout:g} s{heard}: the terminal is offline, or "
        "takes no commands (telemetry.commands off, or not over TLS with a pinned CA)"
    )
