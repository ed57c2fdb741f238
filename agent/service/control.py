"""The control socket (DESIGN.md section 10): JSON lines between the running agent and the
technician's commands (``agent status``, ``selftest``, ``signin``, ``echo``, ``provision``,
``journal``).

A request is one JSON object with ``"cmd"``; the answer is one JSON object with ``"ok"`` and either
the command's fields or ``"error"``. Bad input gets an error answer naming what was wrong, and the
connection stays usable; a line over 64 KiB closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.transaction.connections import Connections

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The agent answered with an error, or not in the protocol."""


class NotRunning(ControlError):
    """No agent listens on the control socket."""


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line as an object with a string ``cmd``; ``ValueError`` says what is wrong."""
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except RecursionError:  # "[[[[...": deeper than any request, refused with the reason
        raise ValueError("not JSON the agent reads: nested too deeply") from None
    if not isinstance(request, dict):
        raise ValueError(f"expected a JSON object, got {type(request).__name__}")
    command = request.get("cmd")
    if not isinstance(command, str):
        raise ValueError('expected "cmd": a string naming the command')
    return request


class ControlServer:
    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self._server: asyncio.Server | None = None
        self._connections = Connections()

    async def serve(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._server = await asyncio.start_unix_server(self._client, str(path), limit=MAX_LINE)
        # The service user and root only: the payment app's group must not sign in or
        # re-provision (the payment socket is the one that group gets).
        os.chmod(path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            await self._connections.close([self._server])
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._connections.add(writer)
        try:
            while line := await reader.readline():
                answer = await self.answer(line)
                writer.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
                await writer.drain()
        except (ValueError, asyncio.LimitOverrunError):
            log.warning("control client sent a line over %d bytes; closing", MAX_LINE)
        except ConnectionError:
            pass
        finally:
            self._connections.remove(task)
            writer.close()

    async def answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = parse_request(line)
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        handler = self.handlers.get(request["cmd"])
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {"ok": False, "error": f"unknown command {request['cmd']!r}; known: {known}"}
        try:
            return {"ok": True, **await handler(request)}
        except Exception as exc:  # the answer carries it; the agent keeps serving
            log.warning("control command %s failed: %s", request["cmd"], exc)
            return {"ok": False, "error": str(exc) or type(exc).__name__}


def request(path: Path, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to the running agent and return its answer (blocking)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunning(f"no agent at {path}: {exc.strerror}") from None
        except PermissionError:
            raise ControlError(
                f"{path}: permission denied (run as root or a member of the service's group)"
            ) from None
        try:
            sock.sendall(json.dumps(message).encode() + b"\n")
            with sock.makefile("rb") as stream:
                line = stream.readline(MAX_LINE * 16)
        except TimeoutError:
            raise ControlError(f"the agent did not answer within {timeout:.0f} s") from None
    if not line:
        raise ControlError("the agent closed the control connection without answering")
    try:
        answer = json.loads(line)
    except ValueError:
        raise ControlError(
            f"the agent answered something that is not JSON: {line[:80]!r}"
        ) from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        if not isinstance(answer, dict):
            raise ControlError("the agent answered something that is not a JSON object")
        raise ControlError(answer.get("error", "the agent refused the command"))
    return answer
