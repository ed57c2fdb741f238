"""The module socket (DESIGN.md section 5): the payment app reaches the card module through the
agent, which is the only user of the serial line.

Frames are the serial protocol's (``STX | LEN | SEQ | CMD | DATA | ETX | CRC``) without ACK/NAK,
since a Unix socket is reliable. PING, INFO, KEY_STATUS, RTC, PIN_BLOCK, ENCRYPT and TUSN
(``APP_COMMANDS``) are forwarded with the driver's own SEQ and answered with the app's; anything
else (loading working keys or a master key, MACs: the session's business) is answered ``07`` not
permitted. PIN_BLOCK goes to the module in either format (``0x00`` format 0, ``0x01`` SM4): the
module refuses a format of the other family than the slot's. The driver's lock queues the app's
commands behind the agent's own, and a PIN entry leaves the line free while the cardholder types.

PIN entries are served first come, first served, one at a time per user of the socket and at
most ``module.pin_per_minute`` a minute each (the rest answered ``05``): a member of the group
can neither harvest PIN blocks at machine speed nor starve another's PIN entry. Each one is
journalled: time, peer uid and pid, the masked PAN digits, the outcome; of the refused ones, the
first of each user in a minute, with how many more there were since (a flood of them must not
fill the state partition). A frame, once begun, must be complete within 5 s of its first byte,
and its answer taken by the app within 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent.journal import Journal
from agent.transaction.connections import Connections
from agent.transaction.peers import Admission, Peer, QuietLog, unix_peer
from drivers.framing import BadFrame, Frame, FrameParser
from drivers.module import (
    APP_COMMANDS,
    ENCRYPT_WITH_TDK,
    RESPONSE_BIT,
    CardModule,
    Command,
    ModuleError,
    Status,
)

log = logging.getLogger(__name__)

# Module commands of all apps in flight at once. PIN entries have a thread of their own (the
# module has one keypad: one cardholder at a time), so a slow cardholder never holds up the
# PINGs and ENCRYPTs of other connections.
WORKERS = 4
# Once a frame has begun, the rest must follow within this time of its first byte.
FRAME_TIMEOUT = 5.0
READ_CHUNK = 2048
PIN_WINDOW = 60.0  # seconds over which pin_per_minute counts
PAN_OFFSET = 2  # PIN_BLOCK's DATA: slot, format, then the 12 PAN digits (either format)


class ModuleProxy:
    def __init__(
        self,
        module: CardModule,
        max_clients: int = 8,
        *,
        journal: Journal | None = None,
        pin_per_minute: Callable[[], int] = lambda: 6,
    ) -> None:
        """``pin_per_minute`` is read at each PIN entry: a reload may change it."""
        self._module = module
        self._journal = journal
        self._pin_per_minute = pin_per_minute
        self._pins_served: dict[int, deque[float]] = {}  # by uid: when each PIN entry began
        self._pin_users: set[int] = set()  # uids with a PIN entry queued or at the keypad
        # by uid: when a refused PIN entry was last journalled, and how many since were not
        self._refusals_noted: dict[int, tuple[float, int]] = {}
        self._refusals_due: set[int] = set()  # uids whose held-back count is journalled soon
        self._quiet = QuietLog(PIN_WINDOW)
        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="module-proxy")
        self._keypad = ThreadPoolExecutor(1, thread_name_prefix="module-keypad")
        self._server: asyncio.Server | None = None
        self._connections = Connections()
        self.admission = Admission("module socket", max_clients)
        self.frame_timeout = FRAME_TIMEOUT
        self.forwarded = 0
        self.not_permitted = 0

    async def serve(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._server = await asyncio.start_unix_server(
            self._client, path=str(path), backlog=self.admission.max_clients
        )
        os.chmod(path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            await self._connections.close([self._server])
            self._server = None
        # a PIN entry in progress ends at its keypad timeout; nobody waits for it now
        for executor in (self._executor, self._keypad):
            executor.shutdown(wait=False, cancel_futures=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = await self.admission.enter(writer, self._connections, self.frame_timeout)
        if task is None:
            return
        sock = writer.get_extra_info("socket")
        peer = unix_peer(sock) if sock is not None else None
        parser = FrameParser()
        begun = 0.0  # when the frame being read began (its first byte)
        try:
            while True:
                if parser.partial:
                    # from the frame's first byte, not from the last: a frame dripped a byte
                    # at a time must not hold the connection forever
                    left = begun + self.frame_timeout - time.monotonic()
                    try:
                        async with asyncio.timeout(max(left, 0)):
                            data = await reader.read(READ_CHUNK)
                    except TimeoutError:
                        log.warning(
                            "module socket: a frame not complete %g s after its first byte; "
                            "closing", self.frame_timeout,
                        )  # fmt: skip
                        return
                else:
                    data = await reader.read(READ_CHUNK)
                    begun = time.monotonic()
                if not data:
                    return
                events = parser.feed(data)
                if parser.partial and any(isinstance(event, Frame) for event in events):
                    begun = time.monotonic()  # a frame ended in this read, the next one began
                for event in events:
                    if isinstance(event, BadFrame):
                        # the stream is reliable: a bad frame is a broken client, not line noise
                        log.warning("module socket: bad frame (%s); closing", event.reason)
                        return
                    if isinstance(event, Frame):
                        self._connections.busy.add(task)
                        try:
                            writer.write((await self._answer(event, peer)).encode())
                            # an app that sends and never reads must not keep its slot
                            async with asyncio.timeout(self.frame_timeout):
                                await writer.drain()
                        except TimeoutError:
                            self._quiet.warning(
                                "unread", "module socket: an app does not take its answers "
                                "(%g s); closing", self.frame_timeout,
                            )  # fmt: skip
                            writer.transport.abort()  # close() would wait for it to read
                            return
                        finally:
                            self._connections.busy.discard(task)
                        self._connections.active(task)
        except ConnectionError:
            return
        finally:
            self._connections.remove(task)
            writer.close()

    async def _answer(self, request: Frame, peer: Peer | None) -> Frame:
        if request.cmd not in APP_COMMANDS or (
            # ENCRYPT is for the TDK only: never the PIK or MAK the session's security rests on
            request.cmd == Command.ENCRYPT and request.data[1:2] != bytes([ENCRYPT_WITH_TDK])
        ):
            self.not_permitted += 1
            self._quiet.warning(
                f"not permitted {request.cmd}",
                "module socket: command 0x%02X is not permitted to the app", request.cmd,
            )  # fmt: skip
            return Frame(request.seq, request.cmd | RESPONSE_BIT, bytes([Status.NOT_PERMITTED]))
        command = Command(request.cmd)
        if command is Command.PIN_BLOCK:
            return await self._pin_entry(request, peer)
        return await self._forward(request, self._executor)

    async def _pin_entry(self, request: Frame, peer: Peer | None) -> Frame:
        uid = peer.uid if peer is not None else -1
        now = time.monotonic()
        served = self._pins_served.setdefault(uid, deque())
        while served and served[0] <= now - PIN_WINDOW:
            served.popleft()
        limit = self._pin_per_minute()
        refusal = None
        if uid in self._pin_users:
            refusal = "this user has a PIN entry in progress"
        elif len(served) >= limit:
            refusal = f"{limit} PIN entries in the last minute (module.pin_per_minute)"
        if refusal is not None:
            self._note_refusal(request, peer, uid, refusal)
            return Frame(request.seq, request.cmd | RESPONSE_BIT, bytes([Status.BUSY]))
        served.append(now)
        self._pin_users.add(uid)
        try:
            answer = await self._forward(request, self._keypad)  # one keypad: in arrival order
        finally:
            self._pin_users.discard(uid)
        status = answer.data[0] if answer.data else Status.BUSY
        self._journal_pin(request, peer, "served" if status == 0 else f"status {status:02X}")
        return answer

    def _note_refusal(self, request: Frame, peer: Peer | None, uid: int, refusal: str) -> None:
        """The first refused PIN entry of ``uid`` in a minute, logged and journalled with how
        many more there were since the last one that was; the others only counted."""
        now = time.monotonic()
        noted, more = self._refusals_noted.get(uid, (now - PIN_WINDOW, 0))
        if now - noted < PIN_WINDOW:
            self._refusals_noted[uid] = (noted, more + 1)
            if uid not in self._refusals_due:  # a burst that ends within the minute is told
                self._refusals_due.add(uid)
                asyncio.get_running_loop().call_later(
                    noted + PIN_WINDOW - now, self._note_held_back, request, peer, uid, refusal
                )
            return
        self._refusals_noted[uid] = (now, 0)
        since = f" ({more} more refused since the last noted)" if more else ""
        log.warning("module socket: PIN entry for uid %d refused: %s%s", uid, refusal, since)
        self._journal_pin(request, peer, f"refused: {refusal}{since}")

    def _note_held_back(self, request: Frame, peer: Peer | None, uid: int, refusal: str) -> None:
        """The minute is over: the refusals held back in it, journalled and logged at once
        (with the card of one of them), if no refusal since has done it."""
        self._refusals_due.discard(uid)
        more = self._refusals_noted.get(uid, (0.0, 0))[1]
        if not more:
            return
        self._refusals_noted[uid] = (time.monotonic(), 0)
        log.warning("module socket: %d more PIN entries for uid %d refused: %s", more, uid,
                    refusal)  # fmt: skip
        self._journal_pin(request, peer, f"refused: {refusal} ({more} more in the last minute)")

    def _journal_pin(self, request: Frame, peer: Peer | None, outcome: str) -> None:
        """Every PIN entry in the journal, on its thread (the answer never waits for it): time,
        who, which card, what came of it. Never the PIN block. The module gets the PAN's 12
        digits before its check digit: of them only the last 3 are kept, which are within the
        last 4 the sale's own row shows (their last 4 would add the PAN's fifth last)."""
        if self._journal is None:
            return
        digits = request.data[PAN_OFFSET : PAN_OFFSET + 12].decode("ascii", "replace")
        detail = {
            "uid": peer.uid if peer is not None else None,
            "pid": peer.pid if peer is not None else None,
            "pan": "*" * 9 + digits[-3:],
            "outcome": outcome,
        }
        self._journal.note("pin-entry", **detail)

    async def _forward(self, request: Frame, executor: ThreadPoolExecutor) -> Frame:
        command = Command(request.cmd)
        loop = asyncio.get_running_loop()
        try:
            payload = await loop.run_in_executor(
                executor, self._module.forward, command, request.data
            )
            self.forwarded += 1
        except ModuleError as exc:
            # no answer from the module: "busy" tells the app to try again
            self._quiet.warning(
                f"failed {command.name}", "module socket: %s for the app failed: %s",
                command.name, exc,
            )  # fmt: skip
            payload = bytes([Status.BUSY])
        except Exception:  # shutting down (no executor), or a bug: the app still gets an answer
            log.exception("module socket: %s for the app failed", command.name)
            payload = bytes([Status.BUSY])
        return Frame(request.seq, request.cmd | RESPONSE_BIT, payload)
