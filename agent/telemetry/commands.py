"""Operator commands received over MQTT (DESIGN.md section 14): ``selftest``, ``signin``,
``provision``, ``journal`` and ``incident``, nothing else (no shell, no key, no money, no
configuration). Authorisation is the broker's (only operators may publish on ``cmd``); the agent
adds its own limits: a command past its ``expires`` (or without one), one whose id was seen
before, an unknown one or one over ``telemetry.commands_per_minute`` is refused, and every one is
journalled with its id and outcome (the fleet hears of it as a ``command`` event). The publisher
subscribes only when ``telemetry.commands`` is on and the broker is TLS with a pinned CA."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from agent.journal import Journal, JournalError
from agent.telemetry.state import iso

log = logging.getLogger(__name__)

NAMES = ("selftest", "signin", "provision", "journal", "incident")
MAX_PAYLOAD = 4096  # bytes: a command is a few words
MAX_AHEAD = 86_400.0  # seconds: a command that expires later than this is not a command
MAX_DETAIL = 2000  # characters of an error's text in a result
Operation = Callable[[dict[str, Any]], Awaitable[Any]]


class Refused(Exception):
    """The command is not carried out; the text says why."""


class Commands:
    """Checks, carries out and journals one command at a time; returns the result message."""

    def __init__(
        self,
        operations: Mapping[str, Operation],
        journal: Journal,
        per_minute: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        unknown = set(operations) - set(NAMES)
        if unknown:
            raise ValueError(f"not operator commands: {', '.join(sorted(unknown))}")
        self._operations = operations
        self._journal = journal
        self._per_minute = per_minute
        self._clock = clock
        self._seen: dict[str, float] = {}  # command id -> when it is forgotten (a day on)
        self._remembered = False  # whether the ids journalled before a restart are in _seen
        self._recent: deque[float] = deque()  # monotonic times of the commands carried out

    async def handle(self, command_id: str, payload: bytes) -> dict[str, Any]:
        """The result of command ``command_id``: ``{"ok", "detail", "at"}``."""
        if not self._remembered:
            await self._remember()
        name = "?"  # until the payload names it
        repeat = not self._first_time(command_id)
        try:
            name, args, expires = _parse(payload)
            if repeat:
                raise Refused(f"command id {command_id} was received before: not carried out again")
            self._admit(name, expires)
            detail = await self._operations[name](args)
            ok, outcome = True, "done"
        except Refused as exc:
            ok, outcome, detail = False, "refused", str(exc)
        except Exception as exc:  # an operation's failure is the operator's answer, not a crash
            ok, outcome, detail = False, "failed", (str(exc) or type(exc).__name__)[:MAX_DETAIL]
        said = detail if isinstance(detail, str) else "see result"
        try:
            self._journal.note("command", id=command_id, cmd=name, outcome=outcome, detail=said)
        except JournalError as exc:
            log.warning("command %s not journalled: %s", command_id, exc)
        log.log(logging.INFO if ok else logging.WARNING, "operator command %s (%s): %s: %s",
                name, command_id, outcome, said)  # fmt: skip
        return {"ok": ok, "detail": detail, "at": iso(self._clock())}

    async def _remember(self) -> None:
        """The ids of commands journalled within ``MAX_AHEAD`` (before a restart too): a
        command repeated after a restart is still a repeat."""
        since = self._clock() - MAX_AHEAD
        try:
            events = await self._journal.run(self._journal.events, since)
        except JournalError as exc:
            log.warning("commands seen before cannot be read: %s", exc)
            return
        for event in events:
            if event["kind"] == "command" and isinstance(event.get("id"), str):
                self._seen[event["id"]] = event["at"] + MAX_AHEAD
        self._remembered = True

    def _first_time(self, command_id: str) -> bool:
        """Whether no command came with this id within a day, whatever became of it then
        (refused, expired since, carried out): a repeat is refused. The journal keeps every
        one, so a restart remembers the same."""
        now = self._clock()
        self._seen = {seen: until for seen, until in self._seen.items() if until > now}
        if command_id in self._seen:
            return False
        self._seen[command_id] = now + MAX_AHEAD
        return True

    def _admit(self, name: str, expires: float) -> None:
        """Refuse an unknown command, an expired one, one over the rate."""
        now = self._clock()
        if name not in self._operations:
            raise Refused(f"unknown command {name!r}; known: {', '.join(self._operations)}")
        if expires <= now:
            raise Refused(f"expired at {iso(expires)}")
        if expires > now + MAX_AHEAD:
            raise Refused(f"expires more than {MAX_AHEAD:.0f} s ahead: not a command to keep")
        moment = time.monotonic()
        while self._recent and moment - self._recent[0] >= 60:
            self._recent.popleft()
        if len(self._recent) >= self._per_minute():
            raise Refused(f"more than {self._per_minute()} commands a minute: try again later")
        self._recent.append(moment)


def _parse(payload: bytes) -> tuple[str, dict[str, Any], float]:
    """(name, args, expiry) of a command; the name clipped, as it is journalled."""
    if len(payload) > MAX_PAYLOAD:
        raise Refused(f"a command of {len(payload)} bytes: at most {MAX_PAYLOAD}")
    try:
        command = json.loads(payload)
    except (ValueError, RecursionError):
        raise Refused('not JSON: expected {"cmd", "args", "expires"}') from None
    if not isinstance(command, dict) or not isinstance(command.get("cmd"), str):
        raise Refused('expected {"cmd": name, "args": {...}, "expires": ISO 8601 time}')
    args = command.get("args") or {}
    if not isinstance(args, dict):
        raise Refused('"args" must be an object')
    return command["cmd"][:40], args, _expiry(command.get("expires"))


def _expiry(value: Any) -> float:
    if not isinstance(value, str):
        raise Refused('"expires" is missing: an ISO 8601 UTC time such as 2026-12-06T10:00:00Z')
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Refused(f'"expires" is not an ISO 8601 time: {value[:40]!r}') from None
    if moment.tzinfo is None:
        raise Refused('"expires" has no time zone: give UTC (a trailing Z)')
    return moment.timestamp()
