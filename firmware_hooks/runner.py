"""The firmware hook runner (DESIGN.md section 9).

A hook is an executable in ``<directory>/<event>/`` or a Python entry point in group
``pos_agent.hooks`` named after the event. The runner hands each the event's payload, runs them one
after the other (executables in name order, then entry points) and reports what each did. No hook
can stop the others or the agent: whatever it does ends up as a HookResult.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import inspect
import json
import logging
import os
import signal
import stat
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_hooks import process, python_hooks

log = logging.getLogger(__name__)

EVENTS = (
    "provision",
    "sync-clock",
    "signed-in",
    "on-97",
    "on-unregistered",
    "display-message",
    "reversal-stuck",
    "parameters-downloaded",
    "parameters-requested",
    "registration-check",
    "location",
    "request-refused",
)
EXIT_TRY_LATER = 75  # EX_TEMPFAIL in sysexits.h
# Left behind by editors and package managers, or switched off by hand: never run.
SKIPPED_SUFFIXES = ("~", ".disabled", ".dpkg-old", ".dpkg-new")
STDERR_LOGGED = 1000  # characters
DETAIL_MAX = 300  # characters: a detail is one line for a log or a status display

_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class Outcome(enum.Enum):
    DONE = "done"
    TRY_LATER = "try-later"
    FAILED = "failed"


class TryLater(Exception):
    """A Python hook raises this to say 'try later' (exit 75 for executables)."""


@dataclass(frozen=True)
class HookResult:
    hook: str  # executable path, or "entry point <name> (<module:attr>)"
    outcome: Outcome
    output: dict[str, Any] | None  # the JSON object the hook printed/returned, if any
    detail: str  # one line: why it failed or tried later; empty when done
    duration_ms: int

    @property
    def done(self) -> bool:
        """Whether the hook did what it was asked (:attr:`Outcome.DONE`)."""
        return self.outcome is Outcome.DONE

    @property
    def tries_later(self) -> bool:
        """Whether the hook asked to be run again later (:attr:`Outcome.TRY_LATER`)."""
        return self.outcome is Outcome.TRY_LATER


_Judged = tuple[Outcome, dict[str, Any] | None, str]


@dataclass(frozen=True)
class _Executable:
    path: Path
    root: Path  # the hooks directory it was found in

    @property
    def name(self) -> str:
        return str(self.path)

    async def run(self, event: str, document: str, timeout: float) -> _Judged:
        # The file is opened once; that open file is checked and that very file executed
        # (DESIGN.md section 9): swapping a link between the check and the exec runs nothing
        # else. Without blocking: a FIFO put in the hook's place would hold the open (and the
        # agent's event loop) until someone writes to it; opened, it is refused as no file.
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            return Outcome.FAILED, None, f"could not start: {_start_error(exc)}"
        try:
            refusal = _untrusted(fd, self.path, self.root)
            if refusal:
                log.warning("refusing hook %s: %s", self.path, refusal)
                return Outcome.FAILED, None, f"refused: {refusal}"
            try:
                finished = await process.run_process(
                    self.path, event, document.encode() + b"\n", timeout, opened=fd
                )
            except OSError as exc:
                return Outcome.FAILED, None, f"could not start: {_start_error(exc)}"
        finally:
            os.close(fd)
        judged = _judge_process(finished, timeout)
        _log_stderr(self.name, event, judged[0], finished.stderr)
        return judged


@dataclass(frozen=True)
class _EntryPoint:
    entry_point: python_hooks.EntryPoint

    @property
    def name(self) -> str:
        return f"entry point {self.entry_point.name} ({self.entry_point.value})"

    async def run(self, event: str, document: str, timeout: float) -> _Judged:
        payload = json.loads(document)  # a copy of its own: changing it affects no other hook
        try:
            result = await python_hooks.call(self.entry_point, payload, timeout)
        except TryLater as exc:
            return Outcome.TRY_LATER, None, _describe(exc)
        except python_hooks.DidNotReturn:
            # Its thread cannot be stopped and runs on; the agent does not wait for it.
            return Outcome.FAILED, None, f"did not return within {timeout} s"
        except (Exception, SystemExit) as exc:  # a hook calling sys.exit() must not stop the agent
            log.warning("hook %s for %s raised", self.name, event, exc_info=exc)
            return Outcome.FAILED, None, _describe(exc)
        return _judge_return(result)


class HookRunner:
    """Runs the hooks of an event: executables in ``directory`` and Python entry points."""

    def __init__(
        self, directory: Path | str | None, *, timeout: float = 10.0, entry_points: bool = True
    ) -> None:
        """``directory`` None or "" (``hooks.directory = ""``): no executable hooks at all,
        never the working directory."""
        if timeout <= 0:
            raise ValueError(f"the hook timeout must be positive, not {timeout}")
        # Absolute, because hooks are started in / and their path must still name them there.
        self.directory = Path(directory).absolute() if directory else None
        self.timeout = float(timeout)
        self._use_entry_points = entry_points
        self._entry_points: dict[str, list[python_hooks.EntryPoint]] | None = None

    def hooks_for(self, event: str) -> list[str]:
        """What ``run`` would run for ``event``, in order: executables, then entry points.

        A group- or world-writable executable is listed: ``run`` reports it as refused.
        """
        return [hook.name for hook in self._hooks(event)]

    async def run(
        self,
        event: str,
        payload: dict[str, Any],
        budget: float | None = None,
        only: Collection[str] | None = None,
    ) -> list[HookResult]:
        """Run every hook of ``event`` in order (``only`` those named, when given: the ones that
        said try later), each with ``payload`` (its "event" set), each within the hook timeout
        and all of them within ``budget`` seconds when given (a remedy waits for them: three
        hanging hooks must not cost it three timeouts)."""
        if self._use_entry_points and self._entry_points is None:
            # a child process lists them (python_hooks.FIND): waited for in a thread, not on
            # the event loop (the start's signed-in hooks come right after READY=1)
            self._entry_points = await asyncio.to_thread(python_hooks.find, EVENTS)
        hooks = [h for h in self._hooks(event) if only is None or h.name in only]
        document = json.dumps({**payload, "event": event}, ensure_ascii=False, allow_nan=False)
        results = []
        deadline = None if budget is None else time.monotonic() + budget
        for hook in hooks:
            started = time.monotonic()
            timeout = self.timeout if deadline is None else min(self.timeout, deadline - started)
            if timeout <= 0:
                detail = f"not run: the {budget:g} s for {event} hooks were used up"
                log.warning("hook %s for %s %s", hook.name, event, detail)
                results.append(HookResult(hook.name, Outcome.FAILED, None, detail, 0))
                continue
            outcome, output, detail = await hook.run(event, document, timeout)
            duration_ms = round((time.monotonic() - started) * 1000)
            # Never the payload: the hook has it on stdin, the log does not need it.
            log.info(
                "hook %s for %s: %s in %d ms%s",
                hook.name, event, outcome.value, duration_ms, f" ({detail})" if detail else "",
            )  # fmt: skip
            results.append(HookResult(hook.name, outcome, output, detail, duration_ms))
        return results

    def _hooks(self, event: str) -> list[_Executable | _EntryPoint]:
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r}; the events are {', '.join(EVENTS)}")
        return [*self._executables(event), *self._python_hooks(event)]

    def _executables(self, event: str) -> list[_Executable]:
        if self.directory is None:
            return []
        folder = self.directory / event
        try:
            paths = sorted(folder.iterdir(), key=lambda path: path.name)
        except (FileNotFoundError, NotADirectoryError):
            return []  # no hooks for this event
        except OSError as exc:
            log.warning("cannot list the hooks in %s: %s", folder, exc)
            return []
        hooks = (_executable(path, self.directory) for path in paths)
        return [hook for hook in hooks if hook is not None]

    def _python_hooks(self, event: str) -> list[_EntryPoint]:
        if not self._use_entry_points:
            return []
        if self._entry_points is None:
            # once, and only when hooks are first wanted, not while the agent starts
            self._entry_points = python_hooks.find(EVENTS)
        return [_EntryPoint(entry_point) for entry_point in self._entry_points[event]]


def _executable(path: Path, root: Path) -> _Executable | None:
    """The hook at ``path`` (in ``root``, the hooks directory), or None (logged) when it is not
    one. Whether it may run is decided when it runs, on the file then opened."""
    if path.name.startswith(".") or path.name.endswith(SKIPPED_SUFFIXES):
        log.debug("skipping %s: its name marks it as hidden, disabled or a leftover", path)
        return None
    try:
        mode = path.stat().st_mode  # of the target: a symlink's own mode means nothing
    except OSError as exc:
        log.warning("skipping hook %s: %s", path, exc)  # a dangling symlink, most likely
        return None
    if not stat.S_ISREG(mode):
        log.debug("skipping %s: not a regular file", path)
        return None
    if not os.access(path, os.X_OK):
        log.debug("skipping %s: not executable", path)
        return None
    return _Executable(path, root)


def _untrusted(fd: int, path: Path, root: Path) -> str:
    """Why the hook opened as ``fd`` (found at ``path`` in ``root``) must not run; "" when it
    may. The open file itself and every directory from the file it is up to ``root`` (to /
    for a link that leads out of it), and every directory from ``path``'s entry up to
    ``root``, must be owned by root or the agent's user and writable by no one else:
    otherwise another local user could put code there that the agent would run."""

    def up_to_root(start: Path, top: Path) -> list[Path]:
        """``start`` and its directories up to ``top`` (or to / when ``top`` is not above)."""
        chain = [start]
        while chain[-1] != top and chain[-1] != chain[-1].parent:
            chain.append(chain[-1].parent)
        return chain

    owners = {0, os.geteuid()}

    def refusal(what: str, info: os.stat_result) -> str:
        if info.st_uid not in owners:
            return f"{what} is owned by uid {info.st_uid}, not root or the agent's user"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{what} is group- or world-writable (mode {stat.S_IMODE(info.st_mode):04o})"
        return ""

    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode):
        return "the hook is no longer a regular file"
    if reason := refusal("the hook", opened):
        return reason
    # the file as it was opened, wherever its links led at that moment
    target = Path(os.readlink(f"/proc/self/fd/{fd}"))
    # the directories above it (up to hooks.d when it lies inside, else to /), then the
    # directories the listing went through, hooks.d included
    checked = [*up_to_root(target.parent, root.resolve()), *up_to_root(path.parent, root)]
    for place in dict.fromkeys(checked):
        try:
            info = place.stat()
        except OSError as exc:
            return f"{place} cannot be examined: {exc.strerror or exc}"
        if reason := refusal(f"directory {place}", info):
            return reason
    return ""


def _judge_process(finished: process.Finished, timeout: float) -> _Judged:
    if finished.timed_out:
        detail = f"killed after {timeout} s timeout"
        if finished.returncode is not None and finished.returncode != -signal.SIGKILL:
            detail += (
                f" (it had ended with {_status(finished.returncode)}, but a process it started"
                " still held its stdout or stderr)"
            )
        return Outcome.FAILED, None, detail
    returncode = finished.returncode
    assert returncode is not None  # reaped, since it was not killed
    output, problem = _parse_output(finished)
    if returncode not in (0, EXIT_TRY_LATER):
        return Outcome.FAILED, output, _status(returncode)
    if problem:
        return Outcome.FAILED, None, problem
    if returncode == 0:
        return Outcome.DONE, output, ""
    return Outcome.TRY_LATER, output, _status(returncode)


def _parse_output(finished: process.Finished) -> tuple[dict[str, Any] | None, str]:
    """The JSON object the hook printed (None when it printed nothing), and what is wrong."""
    if finished.stdout_over_limit:
        return None, f"output over {process.STDOUT_LIMIT // 1024} KiB"
    try:
        text = finished.stdout.decode()
    except UnicodeDecodeError:
        return None, "printed invalid JSON: not UTF-8"
    if not text.strip():
        return None, ""
    try:
        value = json.loads(text)
    except RecursionError:
        return None, "printed invalid JSON: nested too deeply"
    except ValueError as exc:
        return None, _clip(f"printed invalid JSON: {exc}")
    if not isinstance(value, dict):
        return None, f"printed JSON that is not an object: {_JSON_KINDS[type(value)]}"
    return value, ""


def _judge_return(result: object) -> _Judged:
    if result is None:
        return Outcome.DONE, None, ""
    if isinstance(result, dict):
        try:
            # What an executable could have printed, and no object the hook still holds.
            output = json.loads(json.dumps(result, allow_nan=False))
        except (TypeError, ValueError) as exc:
            return Outcome.FAILED, None, _clip(f"returned a dict that is not JSON: {exc}")
        return Outcome.DONE, output, ""
    if inspect.iscoroutine(result):
        result.close()  # a sync function that returned a coroutine: it will never be awaited
    return Outcome.FAILED, None, f"returned {type(result).__name__}, not a dict or None"


def _status(returncode: int) -> str:
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = str(-returncode)
    return f"killed by signal {name}"


def _start_error(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.errno == errno.ENOENT:
        text += " (the hook, or the interpreter on its #! line, is missing)"
    elif exc.errno == errno.ENOEXEC:
        text += " (a script needs a #! line)"
    return text


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return _clip(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _clip(text: str) -> str:
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."


def _log_stderr(hook: str, event: str, outcome: Outcome, stderr: bytes) -> None:
    text = stderr.decode(errors="replace").strip()
    if not text:
        return
    if len(text) > STDERR_LOGGED:
        text = text[:STDERR_LOGGED] + "..."
    level = logging.DEBUG if outcome is Outcome.DONE else logging.WARNING
    log.log(level, "hook %s for %s wrote on stderr: %s", hook, event, text)
