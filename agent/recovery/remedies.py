"""What recovery can do to the terminal. The service (:class:`agent.service.assembly.Agent`)
implements :class:`Remedies`; recovery is given it at construction."""

from __future__ import annotations

from typing import Any, Protocol

from agent.selfcheck import Report


class Remedies(Protocol):
    """What recovery can do to the terminal; the agent implements it."""

    async def self_check(self) -> Report: ...
    async def sign_in(self) -> str: ...  # each returns what it did; raises RemedyFailed
    async def provision(self, reason: str) -> str: ...
    async def sync_clock(self, clock: dict[str, Any]) -> str: ...
    async def fail_over(self) -> str: ...
    async def hook(self, event: str, payload: dict[str, Any]) -> None: ...
    def identity(self) -> dict[str, str]: ...  # tid, mid, support_phone
    def signed_in_at(self) -> str: ...  # HOST:PORT of the last successful sign-in, or ""


class RemedyFailed(Exception):
    """A remedy could not be applied; the text says why."""


class HostSilent(RemedyFailed):
    """A remedy got no answer from the host (a timeout, no connection): a communication
    failure, never a refusal, so never a reason to call the terminal unregistered."""
