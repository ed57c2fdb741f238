"""The control socket (DESIGN.md section 10): JSON lines between the running agent and the
technician's commands (``agent status``, ``selftest``, ``signin``, ``echo``, ``provision``,
``journal``).

A request is one JSON object with ``"cmd"``; the answer is one JSON object with ``"ok"`` and either
the command's fields or ``"error"``. Bad input gets an error answer naming what was wrong, and the
connection stays usable; a line over 64 KiB closes it. At most :data:`MAX_CLIENTS` connections
at once (at the cap the one idle the longest makes room) and none once the agent is short of
file descriptors; one that sends no request for :data:`IDLE_TIMEOUT` seconds, or does not take
its answer within as long, is closed: connections to it must never keep a payment out.

Who may ask what: root and the service's own user anything; members of group ``pos-agent-tech``
(technicians without root) only the commands that read (:data:`READ_ONLY`); nobody else. The
socket is 0660 with that group, so the kernel turns others away at connect; the agent asks the
kernel who is at the other end (SO_PEERCRED, as it was at connect) and answers each command by
that. Where the group does not exist, or the agent may not give the socket to it, the socket
stays 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import pwd
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.transaction.connections import Connections
from agent.transaction.peers import FD_RESERVE, Peer, QuietLog, descriptors_left, unix_peer

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
MAX_CLIENTS = 8  # a technician's command or two, the agent's own tools; more wait for room
ROOM_WAIT = 1.0  # seconds a new connection at the cap waits for one to end or be idle
IDLE_TIMEOUT = 30.0
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
TECHNICIAN_GROUP = "pos-agent-tech"
# What a technician may ask: the commands that only read. A sign-in, provisioning and the echo
# test act on the host or the terminal; they stay root's and the service's.
READ_ONLY = frozenset({"status", "selftest", "journal", "params"})


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
        self._technicians: int | None = None  # the group's id, once the socket is open to it
        self._quiet = QuietLog()
        self.idle_timeout = IDLE_TIMEOUT

    async def serve(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._server = await asyncio.start_unix_server(self._client, str(path), limit=MAX_LINE)
        # The service user and root only: the payment app's group must not sign in or
        # re-provision (the payment socket is the one that group gets); then the technicians'
        # group, where there is one, to read.
        os.chmod(path, 0o600)
        self._technicians = _open_to_technicians(path)

    def permitted(self, peer: Peer | None) -> frozenset[str]:
        """The commands ``peer`` may ask: every one for root and the service's user, the
        read-only ones for a technician, none for anyone else (or a peer the kernel does not
        name)."""
        if peer is None:
            return frozenset()
        if peer.uid in (0, os.geteuid()):
            return frozenset(self.handlers)
        if self._technicians is not None and _in_group(peer, self._technicians):
            return READ_ONLY.intersection(self.handlers)
        return frozenset()

    async def close(self) -> None:
        if self._server is not None:
            await self._connections.close([self._server])
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        refusal = await self._refusal()
        if refusal is not None:
            self._quiet.warning(refusal, "control socket: connection refused: %s", refusal)
            writer.close()
            return
        task = self._connections.add(writer)
        permitted = self.permitted(unix_peer(writer.get_extra_info("socket")))
        try:
            while True:
                async with asyncio.timeout(self.idle_timeout):
                    line = await reader.readline()
                if not line:
                    break
                self._connections.busy.add(task)
                try:
                    answer = await self.answer(line, permitted)
                    writer.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
                    async with asyncio.timeout(self.idle_timeout):
                        await writer.drain()
                finally:
                    self._connections.busy.discard(task)
                self._connections.active(task)
        except TimeoutError:
            log.info("control client silent or not reading for %g s; closing", self.idle_timeout)
            writer.transport.abort()  # close() would wait for it to read what is unsent
        except (ValueError, asyncio.LimitOverrunError):
            log.warning("control client sent a line over %d bytes; closing", MAX_LINE)
        except ConnectionError:
            pass
        finally:
            self._connections.remove(task)
            writer.close()

    async def _refusal(self) -> str | None:
        if self._connections.closing:
            return "the agent is stopping"
        if descriptors_left() < FD_RESERVE:
            return f"fewer than {FD_RESERVE} file descriptors left"
        if not await self._connections.room(MAX_CLIENTS, ROOM_WAIT):
            return f"at most {MAX_CLIENTS} connections, none idle"
        return None

    async def answer(self, line: bytes, permitted: frozenset[str] | None = None) -> dict[str, Any]:
        """The answer to one request line; ``permitted``: the commands its sender may ask
        (:meth:`permitted`), every one when None (a caller in this process)."""
        try:
            request = parse_request(line)
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        handler = self.handlers.get(request["cmd"])
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {"ok": False, "error": f"unknown command {request['cmd']!r}; known: {known}"}
        if permitted is not None and request["cmd"] not in permitted:
            return {"ok": False, "error": _refusal(request["cmd"])}
        try:
            return {"ok": True, **await handler(request)}
        except Exception as exc:  # the answer carries it; the agent keeps serving
            log.warning("control command %s failed: %s", request["cmd"], exc)
            return {"ok": False, "error": str(exc) or type(exc).__name__}


def _refusal(command: str) -> str:
    return (
        f"{command} is for root and the service's user; members of group {TECHNICIAN_GROUP} "
        f"may ask {', '.join(sorted(READ_ONLY))}"
    )


def _open_to_technicians(path: Path) -> int | None:
    """Give the socket to group :data:`TECHNICIAN_GROUP` (0660) and return the group's id;
    None, and the socket stays 0600, where there is no such group or the agent may not give
    it (neither root nor a member: pos-agent.sysusers makes the service one)."""
    try:
        group = grp.getgrnam(TECHNICIAN_GROUP).gr_gid
    except KeyError:
        return None
    try:
        os.chown(path, -1, group)
    except OSError as exc:
        log.warning("control socket %s: not open to group %s (%s): technicians need root",
                    path, TECHNICIAN_GROUP, exc.strerror or exc)  # fmt: skip
        return None
    os.chmod(path, 0o660)
    return group


def _in_group(peer: Peer, group: int) -> bool:
    """Whether ``peer`` is in ``group``: as the kernel told at connect, else (a kernel without
    SO_PEERGROUPS tells only the primary group) as /etc/group says."""
    if group in peer.groups:
        return True
    try:
        user = pwd.getpwuid(peer.uid)
    except KeyError:
        return False
    return group in os.getgrouplist(user.pw_name, user.pw_gid)


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
                f"{path}: permission denied: run as root, or as a member of group "
                f"{TECHNICIAN_GROUP} for {', '.join(sorted(READ_ONLY))} (a new member must "
                "log in again)"
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
