"""The module socket (DESIGN.md section 5): the payment app reaches the card module through the
agent, which is the only user of the serial line.

Frames are the serial protocol's (``STX | LEN | SEQ | CMD | DATA | ETX | CRC``) without ACK/NAK,
since a Unix socket is reliable. PING, INFO, KEY_STATUS, RTC, PIN_BLOCK and ENCRYPT are forwarded
with the driver's own SEQ and answered with the app's; anything else (loading keys, MACs: the
session's business) is answered ``07`` not permitted. The driver's lock queues the app's commands
behind the agent's own, and a PIN entry leaves the line free while the cardholder types.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent.transaction.connections import Connections
from agent.transaction.peers import Admission
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
# Once a frame has begun, the rest must follow within this time.
FRAME_TIMEOUT = 5.0
READ_CHUNK = 2048


class ModuleProxy:
    def __init__(self, module: CardModule, max_clients: int = 8) -> None:
        self._module = module
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
        parser = FrameParser()
        try:
            while True:
                if parser.partial:
                    try:
                        async with asyncio.timeout(self.frame_timeout):
                            data = await reader.read(READ_CHUNK)
                    except TimeoutError:
                        log.warning(
                            "module socket: a frame stalled for %g s; closing", self.frame_timeout
                        )
                        return
                else:
                    data = await reader.read(READ_CHUNK)
                if not data:
                    return
                for event in parser.feed(data):
                    if isinstance(event, BadFrame):
                        # the stream is reliable: a bad frame is a broken client, not line noise
                        log.warning("module socket: bad frame (%s); closing", event.reason)
                        return
                    if isinstance(event, Frame):
                        self._connections.busy.add(task)
                        try:
                            writer.write((await self._answer(event)).encode())
                            await writer.drain()
                        finally:
                            self._connections.busy.discard(task)
                        self._connections.active(task)
        except ConnectionError:
            return
        finally:
            self._connections.remove(task)
            writer.close()

    async def _answer(self, request: Frame) -> Frame:
        if request.cmd not in APP_COMMANDS or (
            # ENCRYPT is for the TDK only: never the PIK or MAK the session's security rests on
            request.cmd == Command.ENCRYPT and request.data[1:2] != bytes([ENCRYPT_WITH_TDK])
        ):
            self.not_permitted += 1
            log.warning("module socket: command 0x%02X is not permitted to the app", request.cmd)
            return Frame(request.seq, request.cmd | RESPONSE_BIT, bytes([Status.NOT_PERMITTED]))
        command = Command(request.cmd)
        executor = self._keypad if command is Command.PIN_BLOCK else self._executor
        loop = asyncio.get_running_loop()
        try:
            payload = await loop.run_in_executor(
                executor, self._module.forward, command, request.data
            )
            self.forwarded += 1
        except ModuleError as exc:
            # no answer from the module: "busy" tells the app to try again
            log.warning("module socket: %s for the app failed: %s", command.name, exc)
            payload = bytes([Status.BUSY])
        except Exception:  # shutting down (no executor), or a bug: the app still gets an answer
            log.exception("module socket: %s for the app failed", command.name)
            payload = bytes([Status.BUSY])
        return Frame(request.seq, request.cmd | RESPONSE_BIT, payload)
