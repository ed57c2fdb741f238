"""Who may use the agent's local sockets, and how many at once (DESIGN.md section 10).

A payment or module socket connection is admitted when its peer is root, the service's own user,
or in the service's group (the group the socket file's 0660 mode admits). A Unix socket tells the
peer's process (SO_PEERCRED), whose groups, supplementary ones included (a payment app's unit may
give it the group with ``SupplementaryGroups=``), are read from ``/proc/PID/status``. A TCP
connection on 127.0.0.1 tells nothing: the kernel's socket table (``/proc/net/tcp``) says which
user owns the connecting socket, and that user must be listed in the group (``/etc/group``). A
connection whose peer cannot be known is refused: no listener lets a local user outside the group
pay or sign in.

The number of connections is capped, and a reserve of file descriptors is kept for the journal,
the card module and the host, so a flood of idle connections cannot take the payment path down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import resource
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from agent.transaction.connections import Connections

log = logging.getLogger(__name__)

FD_RESERVE = 64  # descriptors kept free for the journal, the module, the host and hooks
_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


@dataclass(frozen=True)
class Peer:
    uid: int
    groups: frozenset[int]  # primary and supplementary; empty when only the user is known
    pid: int = 0  # 0 when unknown (a TCP peer)


# SO_PEERGROUPS (Linux 4.13): the peer's supplementary groups as the socket saw them at connect
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
GROUPS_BUFFER = 1024  # bytes: 256 groups, the most Python's getsockopt reads


def unix_peer(sock: socket.socket) -> Peer | None:
    """The user and groups of a Unix socket's peer, from the socket itself: no /proc, which a
    unit's ``ProtectProc=invisible`` hides (a payment app given the group by its unit's
    ``SupplementaryGroups=`` must still be let in)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, gid = struct.unpack("3i", creds)
    groups = {gid}
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, GROUPS_BUFFER)
        groups.update(struct.unpack(f"{len(raw) // 4}I", raw))
    except OSError:  # an older kernel, or more groups than that: the primary group, then
        # /etc/group (``allowed``)
        pass
    return Peer(uid, frozenset(groups), pid)


_ESTABLISHED = "01"


def _proc_endpoint(text: str) -> tuple[str, int]:
    """``0100007F:1F90`` (the kernel's words in host byte order, then the port) as an address."""
    address, port = text.split(":")
    raw = b"".join(
        struct.pack("=I", int(address[i : i + 8], 16)) for i in range(0, len(address), 8)
    )
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw), int(port, 16)


def _normal(address: str, port: int) -> tuple[str, int]:
    """An IPv4 address inside IPv6 (``::ffff:127.0.0.1``) as plain IPv4."""
    return address.removeprefix("::ffff:"), port


def tcp_peer(sock: socket.socket) -> Peer | None:
    """The owner of the local socket at the other end of a loopback TCP connection: the one
    established connection whose two ends are exactly ours swapped. No match, or more than one,
    is no answer (a closed connection's TIME_WAIT row, owned by no one, must never count)."""
    try:
        ours = _normal(*sock.getsockname()[:2])
        theirs = _normal(*sock.getpeername()[:2])
    except OSError:
        return None
    owners = set()
    for table in _TCP_TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            columns = line.split()
            if len(columns) < 8 or columns[3] != _ESTABLISHED:
                continue
            try:
                local = _normal(*_proc_endpoint(columns[1]))
                remote = _normal(*_proc_endpoint(columns[2]))
            except (ValueError, OSError, struct.error):
                continue
            if local == theirs and remote == ours:
                owners.add(int(columns[7]))
    if len(owners) != 1:
        return None
    return Peer(owners.pop(), frozenset())


def allowed(peer: Peer) -> bool:
    """Root, the service's user, or in the service's group (its own, or as /etc/group says)."""
    group = os.getegid()
    if peer.uid in (0, os.geteuid()) or group in peer.groups:
        return True
    try:
        user = pwd.getpwuid(peer.uid)
    except KeyError:
        return False
    return group in os.getgrouplist(user.pw_name, user.pw_gid)


def descriptors_left() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        return soft
    return soft - used


class QuietLog:
    """One warning per ``interval`` for a repeated cause, with the count of the ones held back:
    a flood of refused connections must not fill the disk with log lines."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, text: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        suffix = f" ({held} more like it since the last)" if held else ""
        log.warning(text + suffix, *args)


class Admission:
    """Whether a new connection may stay: its peer, the connection cap (at the cap the
    connection idle the longest makes room), the descriptor reserve."""

    def __init__(self, name: str, max_clients: int, quiet: QuietLog | None = None) -> None:
        self.name = name
        self.max_clients = max_clients
        self.refused = 0
        self._quiet = quiet or QuietLog()

    async def enter(
        self, writer: asyncio.StreamWriter, connections: Connections, wait: float
    ) -> asyncio.Task[None] | None:
        """The new connection of ``writer`` counted into ``connections``, or None when it may
        not stay (it is closed then)."""
        sock = writer.get_extra_info("socket")
        if connections.closing or not await self.admit(sock, connections, wait):
            writer.close()
            return None
        return connections.add(writer)

    async def admit(
        self, sock: socket.socket | None, connections: Connections, wait: float
    ) -> bool:
        """Whether the connection may stay; why not is logged (rate-limited). At the cap it
        waits, at most ``wait`` seconds, for room. A TCP peer is looked up in the kernel's
        socket table in a worker thread: a flood of connects must not stall the event loop."""
        if sock is not None and sock.family != socket.AF_UNIX:
            reason = await asyncio.to_thread(self._refusal, sock)
        else:
            reason = self._refusal(sock)
        if reason is None and not await connections.room(self.max_clients, wait):
            reason = f"at most {self.max_clients} connections, none idle (gateway.max_clients)"
        if reason is None:
            return True
        self.refused += 1
        self._quiet.warning(reason.split(":")[0], "%s: connection refused: %s", self.name, reason)
        return False

    @staticmethod
    def _refusal(sock: socket.socket | None) -> str | None:
        if descriptors_left() < FD_RESERVE:
            return f"fewer than {FD_RESERVE} file descriptors left"
        if sock is None:
            return "peer unknown: no socket"
        peer = unix_peer(sock) if sock.family == socket.AF_UNIX else tcp_peer(sock)
        if peer is None:
            return "peer unknown: its user cannot be found"
        if not allowed(peer):
            return f"peer uid {peer.uid}: not the service's user or group"
        return None
