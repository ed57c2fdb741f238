"""The purchase path's blocking steps (agent/blocking.py): a step that outlasts its
patience is left running, never cancelled, and its outcome is still there to act on."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from agent.blocking import in_worker, patiently

REQUEST = contextvars.ContextVar("request", default="none")


def test_a_step_runs_on_another_thread_with_the_callers_context() -> None:
    async def main() -> tuple[str, str]:
        REQUEST.set("purchase 1")
        return await patiently(
            in_worker(lambda: (REQUEST.get(), threading.current_thread().name)), 5
        )

    seen, thread = asyncio.run(main())
    assert seen == "purchase 1" and thread != threading.current_thread().name


def test_an_error_of_the_step_is_the_callers() -> None:
    def fails() -> None:
        raise LookupError("the journal said no")

    async def main() -> None:
        await patiently(in_worker(fails), 5)

    with pytest.raises(LookupError, match="the journal said no"):
        asyncio.run(main())


def test_a_step_past_its_patience_goes_on_and_its_outcome_is_kept() -> None:
    release = threading.Event()

    async def main() -> tuple[bool, int]:
        step = in_worker(lambda: release.wait(5) and 42)
        with pytest.raises(TimeoutError):
            await patiently(step, 0.05)
        assert not step.done()  # still running, not cancelled
        release.set()
        return step.cancelled(), await step

    assert asyncio.run(main()) == (False, 42)


def test_a_cancelled_caller_leaves_the_step_running() -> None:
    release = threading.Event()

    async def main() -> int:
        step = in_worker(lambda: release.wait(5) and 7)
        caller = asyncio.create_task(patiently(step, 10))
        await asyncio.sleep(0.05)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert not step.cancelled()
        release.set()
        return await step

    assert asyncio.run(main()) == 7


def test_a_step_already_done_needs_no_timer() -> None:
    async def main() -> int:
        step = asyncio.get_running_loop().create_future()
        step.set_result(3)
        return await patiently(step, 0)

    assert asyncio.run(main()) == 3
