"""One hook executable as a process: no shell, a minimal environment, its own process group and a
deadline after which the whole group is killed.

This module only runs the process and collects what it wrote; what the exit status and the output
mean is decided by the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

# A hook answers with one small JSON object; more than this is a runaway hook, and the agent must
# not hold it in memory.
STDOUT_LIMIT = 64 * 1024
# Only the first 1000 characters of stderr are logged; these bytes are enough for them.
STDERR_LIMIT = 4096
# After the SIGKILL, how long to wait for the group to be gone.
KILL_GRACE = 1.0
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Finished:
    returncode: int | None  # negative: killed by that signal; None: not reaped after the kill
    timed_out: bool
    stdout: bytes  # at most STDOUT_LIMIT bytes
    stdout_over_limit: bool
    stderr: bytes  # at most STDERR_LIMIT bytes


def environment(event: str) -> dict[str, str]:
    # Nothing is inherited: the agent's environment may hold configuration overrides that are none
    # of a hook's business, and a hook must behave the same under systemd and in a shell.
    return {"PATH": SEARCH_PATH, "LANG": "C.UTF-8", "POS_AGENT_EVENT": event}


class _Capture:
    """What a pipe brought, up to ``limit`` bytes; the rest is read and dropped, so that the hook
    never blocks on a full pipe and can finish what it is doing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.over_limit = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if len(chunk) > room:
            self.over_limit = True
        self.data += chunk[: max(room, 0)]


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.output = {1: _Capture(STDOUT_LIMIT), 2: _Capture(STDERR_LIMIT)}
        self.exited = loop.create_future()
        self.finished = loop.create_future()  # exited, and stdout and stderr are closed

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.output[fd].add(data)

    def process_exited(self) -> None:
        self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.finished.set_result(None)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited already
        os.killpg(pgid, signal.SIGKILL)


async def _wait(future: asyncio.Future[None], timeout: float) -> bool:
    """Whether ``future`` completed within ``timeout``; it is not cancelled when not. Not
    ``asyncio.wait_for``: on Python 3.11 it returns the result, and the caller's cancellation is
    lost, when both come in one loop iteration (the service's stop then waited for ever)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.shield(future)
    return future.done()


async def _stop(transport: asyncio.SubprocessTransport, protocol: _Protocol) -> None:
    _kill_group(transport.get_pid())
    await _wait(protocol.exited, KILL_GRACE)  # reaped, so no zombie is left behind
    transport.close()


async def run_process(
    path: Path, event: str, stdin: bytes, timeout: float, *, opened: int | None = None
) -> Finished:
    """Run ``path`` with ``stdin`` as its input; with ``opened``, the file open as that
    descriptor is what runs (the kernel's fexecve through /proc), whatever ``path`` names by
    now. Raises OSError when it cannot be started.

    When the caller gives up on it (cancels), the process group is killed before CancelledError
    goes on: the agent leaves no hook running behind it.
    """
    loop = asyncio.get_running_loop()
    starting = asyncio.ensure_future(
        loop.subprocess_exec(
            lambda: _Protocol(loop),
            path if opened is None else f"/proc/self/fd/{opened}",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment(event),
            cwd="/",  # not whatever directory the agent happened to start in
            start_new_session=True,  # its own process group, so the kill reaches its children
            # a script's interpreter opens /proc/self/fd/N itself: the descriptor goes with it
            pass_fds=() if opened is None else (opened,),
        )
    )
    try:
        transport, protocol = await asyncio.shield(starting)
    except asyncio.CancelledError:
        # Cancelled while asyncio connects the pipes, asyncio would kill the hook but not its
        # children, then wait for them to close the pipes. Let the start finish, then stop it.
        await asyncio.wait({starting})
        if not starting.cancelled() and starting.exception() is None:
            await _stop(*starting.result())
        raise
    try:
        # The payload is small; the transport buffers it, and a hook that does not read its stdin
        # only breaks the pipe, which the transport takes quietly.
        pipe = transport.get_pipe_transport(0)
        assert isinstance(pipe, asyncio.WriteTransport)
        pipe.write(stdin)
        pipe.close()
        # The deadline covers the pipes too: a child that still holds the hook's stdout has not
        # finished answering.
        timed_out = not await _wait(protocol.finished, timeout)
        if timed_out:
            _kill_group(transport.get_pid())
            # Only a process that left the group (setsid) can hold the pipes after this; the
            # runner does not wait for it.
            await _wait(protocol.finished, KILL_GRACE)
    except asyncio.CancelledError:
        await _stop(transport, protocol)
        raise
    finally:
        transport.close()
    stdout, stderr = protocol.output[1], protocol.output[2]
    return Finished(
        returncode=transport.get_returncode(),
        timed_out=timed_out,
        stdout=bytes(stdout.data),
        stdout_over_limit=stdout.over_limit,
        stderr=bytes(stderr.data),
    )
