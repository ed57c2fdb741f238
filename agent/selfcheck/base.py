"""What every check shares: its result, worded from the message catalogue, and the context it
inspects."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from agent import messages
from agent.config import Config
from agent.journal import PATIENCE, Journal
from agent.messages import Text
from agent.provisioning import Provisioning, fetch_from_tms
from drivers.module import CardModule, ModuleInfo, ModuleLinkError

if TYPE_CHECKING:
    from agent.hook_dispatch import HookDispatch
    from agent.host.clock import HostClockSample

T = TypeVar("T")


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    id: str
    status: Status
    summary: Text
    detail: str = ""  # technical facts, language-neutral: addresses, codes, times
    remedy: Text | None = None
    finding: str = "ok"  # machine-readable, for the recovery engine's decision table
    data: dict[str, Any] = field(default_factory=dict)
    duration_ms: int = 0

    @property
    def code(self) -> str:
        """The stable code of what the check found, e.g. ``keys.kcv-mismatch`` (``keys.ok`` when
        all is well, ``keys.skip`` when it could not look): its key in the message catalogue."""
        if self.finding != "ok" or self.status is Status.OK:
            return f"{self.id}.{self.finding}"
        return f"{self.id}.{self.status.value}"

    @classmethod
    def of(
        cls,
        check_id: str,
        status: Status,
        detail: str = "",
        *,
        finding: str = "ok",
        variant: str = "",
        remedy: Text | None = None,
        data: dict[str, Any] | None = None,
        **values: messages.Value,
    ) -> CheckResult:
        """A result in the catalogue's words: the summary and remedy of its code, or of
        ``code:variant`` where the check says it another way, filled with ``values``.
        ``remedy`` replaces the catalogue's where what to do depends on more than the values."""
        result = cls(check_id, status, messages.EMPTY, detail, finding=finding, data=data or {})
        key = f"{result.code}:{variant}" if variant else result.code
        summary, said = messages.said(key, **values)
        return dataclasses.replace(result, summary=summary, remedy=remedy or said)

    def to_json(self) -> dict[str, Any]:
        """Both languages: what the daemon sends to ``agent selftest`` over the control socket."""
        return {
            "id": self.id,
            "status": self.status.value,
            "summary": self.summary.to_json(),
            "detail": self.detail,
            "remedy": self.remedy.to_json() if self.remedy else None,
            "finding": self.finding,
            "data": self.data,
            "duration_ms": self.duration_ms,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CheckResult:
        return cls(
            id=raw["id"],
            status=Status(raw["status"]),
            summary=Text(**raw["summary"]),
            detail=raw.get("detail", ""),
            remedy=Text(**raw["remedy"]) if raw.get("remedy") else None,
            finding=raw.get("finding", "ok"),
            data=raw.get("data", {}),
            duration_ms=raw.get("duration_ms", 0),
        )


@dataclass
class Context:
    """What the checks look at. ``agent selftest`` builds one of its own; the daemon passes its
    live journal and module, so a check never fights the daemon for the serial port."""

    config: Config
    journal: Journal | None
    journal_error: str = ""
    module: CardModule | None = None
    now: Callable[[], float] = time.time
    host_clock: Callable[[], HostClockSample | None] = lambda: None
    hooks: HookDispatch | None = None  # the registration-check and location hooks
    _info: asyncio.Task[ModuleInfo] | None = None
    _tms: asyncio.Task[Provisioning] | None = None
    _unreachable: ModuleLinkError | None = None
    _one_at_a_time: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def last_signin(self) -> dict[str, Any] | None:
        """The journal's last sign-in (None without a journal), read on the journal's thread
        within :data:`PATIENCE`."""
        journal = self.journal
        return await journal.within(PATIENCE, journal.last_signin) if journal else None

    async def module_call(self, function: Callable[..., T], *args: Any) -> T:
        """Call the module in a worker thread, one call at a time (the serial line takes one
        anyway). A context lives for one self-check run: once the module could not be reached,
        the checks after hear so at once instead of each waiting out the driver's reopen
        deadline (an unplugged module cost a run three of them)."""
        if self.module is None:
            raise RuntimeError("no card module")
        async with self._one_at_a_time:
            if self._unreachable is not None:
                raise self._unreachable
            try:
                return await asyncio.to_thread(function, *args)
            except ModuleLinkError as exc:
                self._unreachable = exc
                raise

    async def module_info(self) -> ModuleInfo:
        """INFO once per run, shared by the checks that need it."""
        if self._info is None:
            assert self.module is not None
            self._info = asyncio.ensure_future(self.module_call(self.module.info))
            # the checks that asked may have given up; the answer is still looked at
            self._info.add_done_callback(lambda task: task.cancelled() or task.exception())
        return await asyncio.shield(self._info)

    async def tms_record(self) -> Provisioning:
        """What the TMS holds for this terminal's module, asked once per run and shared by the
        checks that compare with it; :class:`ProvisioningError` or :class:`ModuleError` when it
        cannot be known."""
        if self._tms is None:
            config = self.config

            async def ask() -> Provisioning:
                serial = (await self.module_info()).serial
                return await fetch_from_tms(config.tms.url, serial, config.tms.timeout)

            self._tms = asyncio.ensure_future(ask())
            self._tms.add_done_callback(lambda task: task.cancelled() or task.exception())
        return await asyncio.shield(self._tms)


def signin_scheme(last: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """How the last sign-in got its keys, for a check's detail and data: "signed in with
    scheme 004 (the host refused 003 with 40)" (DESIGN.md section 4)."""
    refused = last.get("refused", {})
    text = f"signed in with scheme {last['scheme']}"
    if refused:
        text += " (the host refused " + ", ".join(f"{s} with {c}" for s, c in refused.items()) + ")"
    return text, {"signin": {"scheme": last["scheme"], "refused": refused}}


def elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
