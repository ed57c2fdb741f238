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
from dataclasses import dataclass
from pathlib import Path

# A hook answers with one small JSON object; more than this is a runaway hook, and the agent must
# not hold it in memory.
STDOUT_LIMIT = 64 * 1024
# Only the first 1000 characters of stderr are logged; these bytes are enough for them.
STDERR_LIMIT = 4096
# After the SIGKILL, how long to wait for the pipes to close. Only a process that left the hook's
# process group (setsid) can keep them open longer, and the runner does not wait for it.
KILL_GRACE = 1.0
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CHUNK = 16 * 1024


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
    """Reads a pipe to its end, keeping at most ``limit`` bytes; survives cancellation."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.over_limit = False

    async def drain(self, stream: asyncio.StreamReader) -> None:
        # Keep reading past the limit (and drop it) so that the hook does not block on a full pipe
        # and can finish what it is doing.
        while chunk := await stream.read(_CHUNK):
            room = self.limit - len(self.data)
            if len(chunk) > room:
                self.over_limit = True
            self.data += chunk[: max(room, 0)]


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    # A hook need not read its stdin: once it exits or closes it, the pipe breaks, which is fine.
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(data)
            await stdin.drain()
    finally:
        stdin.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await stdin.wait_closed()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited already
        os.killpg(pgid, signal.SIGKILL)


async def run_process(path: Path, event: str, stdin: bytes, timeout: float) -> Finished:
    """Run ``path`` with ``stdin`` as its input. Raises OSError when it cannot be started."""
    process = await asyncio.create_subprocess_exec(
        path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(event),
        cwd="/",  # not whatever directory the agent happened to start in
        start_new_session=True,  # its own process group, so the kill reaches its children too
    )
    assert process.stdin and process.stdout and process.stderr
    stdout, stderr = _Capture(STDOUT_LIMIT), _Capture(STDERR_LIMIT)
    tasks = {
        asyncio.create_task(_feed(process.stdin, stdin)),
        asyncio.create_task(stdout.drain(process.stdout)),
        asyncio.create_task(stderr.drain(process.stderr)),
        asyncio.create_task(process.wait()),
    }
    try:
        # The deadline covers the pipes too: a child that still holds the hook's stdout has not
        # finished answering.
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        timed_out = bool(pending)
        if timed_out:
            _kill_group(process.pid)
            _, pending = await asyncio.wait(pending, timeout=KILL_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    except asyncio.CancelledError:
        # The agent gave up on the hook (shutdown, an outer deadline): leave nothing running.
        _kill_group(process.pid)
        for task in tasks:
            task.cancel()
        raise
    return Finished(
        returncode=process.returncode,
        timed_out=timed_out,
        stdout=bytes(stdout.data),
        stdout_over_limit=stdout.over_limit,
        stderr=bytes(stderr.data),
    )
