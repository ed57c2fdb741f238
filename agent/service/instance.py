"""One agent per journal and per payment socket (DESIGN.md section 8): before it reads a pending
row or touches a socket, the agent takes an exclusive lock beside the journal and one beside its
payment socket. A second ``agent run`` on the same journal or socket stops there, naming the
lock and the process holding it, and changes nothing: the first one's sale in flight is not
turned into a reversal, its sockets are not taken over."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class AlreadyRunning(Exception):
    """Another agent holds a lock; the text names the lock and the process."""


class InstanceLock:
    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self._held: list[int] = []

    def __enter__(self) -> InstanceLock:
        try:
            for path in self.paths:
                self._held.append(_take(path))
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Closing the descriptors frees the locks; the files stay (unlinking one while
        another process opens it would let two agents hold "the" lock)."""
        for fd in self._held:
            os.close(fd)
        self._held.clear()


def _take(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyRunning(
            f"another agent runs on this state: {path} is locked by process {holder}"
        ) from None
    except OSError:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # the pid is for people; the lock is the flock
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
