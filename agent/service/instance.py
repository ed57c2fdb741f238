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

from agent import paths
from agent.config import Config


class InstanceError(Exception):
    """The agent's locks cannot be taken; the text says which and why."""


class AlreadyRunning(InstanceError):
    """Another agent holds a lock; the text names the lock and the process."""


class InstanceLock:
    def __init__(self, *locks: Path) -> None:
        self.paths = locks
        self._held: list[int] = []

    @classmethod
    def of(cls, config: Config) -> InstanceLock:
        """The locks of the agent ``config`` describes: beside its journal and its socket."""
        journal, payment = paths.journal_path(config), paths.payment_socket(config)
        return cls(
            journal.with_name(journal.name + ".lock"), payment.with_name(payment.name + ".lock")
        )

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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise InstanceError(f"the lock {path} cannot be made: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyRunning(
            f"another agent runs on this state: {path} is locked by process {holder}"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise InstanceError(f"the lock {path} cannot be taken: {exc.strerror or exc}") from None
    with contextlib.suppress(OSError):  # the pid is for people; the lock is the flock
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
