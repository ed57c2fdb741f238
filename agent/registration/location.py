"""Field 59 `A5`, the terminal's location, for acquirers that want it (DESIGN.md section 17):
from the `location` hook (ModemManager's ``mmcli --location-get``, gpsd), kept for
``registration.location_max_age`` seconds. A request never waits for it: it takes what is kept,
and a stale or missing location is asked for in the background."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agent.config import RegistrationConfig
from agent.wire import field59
from agent.wire.errors import WireError

if TYPE_CHECKING:
    from firmware_hooks import HookResult

log = logging.getLogger(__name__)

# What a location hook may print, by name or by A5 sub-usage tag (section 4's list): the names
# field 59 knows, and the short CDMA ones hooks print (sid, nid, bid)
SUB_USAGES = {**field59.A5_KEYS, "sid": "15", "nid": "16", "bid": "17"}
_TAGS = frozenset(SUB_USAGES.values())
_LONGEST_VALUE = 32  # a sub-usage value a hook prints; longer is not a location
# Between two questions to the hooks at most this often, whatever the sales: a hook that fails
# fast must not be started once per sale.
ASK_PAUSE = 60.0


def a5_from_hook(output: dict[str, Any]) -> bytes:
    """The A5 value from a location hook's JSON object; ``ValueError`` naming what is wrong."""
    values: dict[str, str] = {}
    for key, value in output.items():
        tag = SUB_USAGES.get(key, key)
        if tag not in _TAGS:
            continue  # a hook may print more than A5 carries
        text = str(value) if isinstance(value, int | float | str) else None
        if text is None or not text or len(text) > _LONGEST_VALUE or not text.isascii():
            raise ValueError(f"{key} = {value!r} is not a short ASCII value")
        if not text.isprintable():
            raise ValueError(f"{key} holds control characters")
        values[tag] = text
    if not values:
        raise ValueError("no A5 sub-usage in it (longitude, latitude, mcc, mnc, lac, cid ...)")
    ordered = {tag: values[tag] for tag in sorted(values, key=_section_4_order)}
    try:
        return field59.build_a5(ordered)
    except WireError as exc:
        raise ValueError(str(exc)) from None


def _section_4_order(tag: str) -> int:
    # longitude, latitude and the coordinate system first, then the cell, as section 4 lists them
    order = ("01", "02", "05", "03", "04", "06", "07", "08", "15", "16", "17", "18")
    return order.index(tag)


class Location:
    def __init__(
        self,
        ask: Callable[[str, dict[str, Any], float | None], Awaitable[list[HookResult]]],
        settings: Callable[[], RegistrationConfig],
        budget: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ask`` runs the hooks of an event within a budget (``HookDispatch.ask``)."""
        self._ask = ask
        self._settings = settings
        self._budget = budget
        self._monotonic = monotonic
        self._kept: tuple[bytes, float] | None = None
        self._asking: asyncio.Task[None] | None = None
        self._asked_at: float | None = None
        self.last_error = ""

    def a5(self) -> bytes | None:
        """The location to send now, if one is kept and fresh enough; asks the hook in the
        background when not. Never waits. None when ``registration.location`` is off."""
        settings = self._settings()
        if not settings.location:
            return None
        kept = self._kept
        fresh = kept is not None and self._monotonic() - kept[1] < settings.location_max_age
        if not fresh:
            self.refresh()
        return kept[0] if kept is not None and fresh else None

    def refresh(self) -> None:
        """Ask the hooks in the background, unless asked within :data:`ASK_PAUSE`."""
        now = self._monotonic()
        if self._asked_at is not None and now - self._asked_at < ASK_PAUSE:
            return
        if self._asking is None or self._asking.done():
            self._asked_at = now
            self._asking = asyncio.ensure_future(self._ask_hook())

    async def current(self) -> bytes | None:
        """A fresh answer of the hook (the self-check's question: does a source answer?)."""
        await self._ask_hook()
        return self._kept[0] if self._kept is not None else None

    async def _ask_hook(self) -> None:
        try:
            results = await self._ask("location", {}, self._budget())
        except Exception as exc:  # a hook runner failure must never reach a payment
            self.last_error = f"the location hooks failed: {exc}"
            log.exception("asking the location hooks failed")
            return
        problems = []
        for result in results:
            if not result.done or result.output is None:
                problems.append(f"{result.hook}: {result.detail or 'printed no location'}")
                continue
            try:
                value = a5_from_hook(result.output)
            except ValueError as exc:
                problems.append(f"{result.hook}: {exc}")
                continue
            self._kept = (value, self._monotonic())
            self.last_error = ""
            return
        self.last_error = "; ".join(problems) or "no location hook is installed"
        log.warning("no location for field 59 A5: %s", self.last_error)

    async def close(self) -> None:
        if self._asking is not None:
            self._asking.cancel()
            await asyncio.gather(self._asking, return_exceptions=True)
