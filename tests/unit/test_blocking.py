"""The purchase path's blocking steps (agent/blocking.py): a step that outlasts its
patience is left running, never cancelled, and its outcome is still there to act on."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator

import pytest

from agent.blocking import Workers, patiently

REQUEST = contextvars.ContextVar("request", default="none")


@pytest.fixture
def workers() -> Iterator[Workers]:
    workers = Workers(2, "test-worker")
    yield workers
    workers.close()


def test_a_step_runs_on_another_thread_with_the_callers_context(workers) -> None:
    async def main() -> tuple[str, str]:
        REQUEST.set("purchase 1")
        return await patiently(
            workers.run(lambda: (REQUEST.get(), threading.current_thread().name)), 5
        )

    seen, thread = asyncio.run(main())
    assert seen == "purchase 1" and thread.startswith("test-worker_")


def test_an_error_of_the_step_is_the_callers(workers) -> None:
    def fails() -> None:
        raise LookupError("the journal said no")

    async def main() -> None:
        await patiently(workers.run(fails), 5)

    with pytest.raises(LookupError, match="the journal said no"):
        asyncio.run(main())


def test_a_step_past_its_patience_goes_on_and_its_outcome_is_kept(workers) -> None:
    release = threading.Event()

    async def main() -> tuple[bool, int]:
        step = workers.run(lambda: release.wait(5) and 42)
        with pytest.raises(TimeoutError):
            await patiently(step, 0.05)
        assert not step.done()  # still running, not cancelled
        release.set()
        return step.cancelled(), await step

    assert asyncio.run(main()) == (False, 42)


def test_a_cancelled_caller_leaves_the_step_running(workers) -> None:
    release = threading.Event()

    async def main() -> int:
        step = workers.run(lambda: release.wait(5) and 7)
        caller = asyncio.create_task(patiently(step, 10))
        await asyncio.sleep(0.05)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert not step.cancelled()
        release.set()
        return await step

    assert asyncio.run(main()) == 7


def test_a_step_whose_future_was_cancelled_still_runs_to_its_end(workers) -> None:
    """Nobody waits for it any more, but a journal write, once asked, is taken."""
    release, done = threading.Event(), threading.Event()

    async def main() -> None:
        step = workers.run(lambda: release.wait(5) and done.set())
        step.cancel()
        release.set()
        assert await asyncio.to_thread(done.wait, 5)
        await asyncio.sleep(0.01)  # its outcome reaches the loop, which ignores it

    asyncio.run(main())


def test_a_step_already_done_needs_no_timer() -> None:
    async def main() -> int:
        step = asyncio.get_running_loop().create_future()
        step.set_result(3)
        return await patiently(step, 0)

    assert asyncio.run(main()) == 3


def test_threads_start_as_steps_need_them_up_to_the_most(workers) -> None:
    """One sale at a time keeps one thread; steps at once get up to the most, then queue."""
    release = threading.Event()

    def names() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("test-worker_")}

    async def main() -> list[int]:
        for _ in range(3):
            assert await workers.run(lambda: 1) == 1
        assert names() == {"test-worker_0"}
        held = [workers.run(lambda n=n: release.wait(5) and n) for n in range(3)]
        await asyncio.sleep(0.05)
        assert names() == {"test-worker_0", "test-worker_1"}
        assert not any(step.done() for step in held)  # the third waits for a thread
        release.set()
        return list(await asyncio.gather(*held))

    assert asyncio.run(main()) == [0, 1, 2]


def test_close_waits_for_the_steps_asked_before() -> None:
    workers = Workers(1, "closing-worker")
    taken: list[int] = []
    release = threading.Event()

    async def main() -> None:
        workers.run(lambda: release.wait(5) and taken.append(1))
        workers.run(taken.append, 2)

    asyncio.run(main())  # the loop is gone before the steps end: their outcomes go nowhere
    release.set()
    workers.close()
    assert taken == [1, 2]
    assert not [t for t in threading.enumerate() if t.name.startswith("closing-worker_")]


def test_a_cancelled_step_wakes_its_patient_caller_at_once(workers) -> None:
    """Cancelling the future (not the step) ends the caller's wait then, not at its patience."""
    release = threading.Event()

    async def main() -> float:
        step = workers.run(lambda: release.wait(5) and 1)
        caller = asyncio.create_task(patiently(step, 10))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        step.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        return time.monotonic() - started

    assert asyncio.run(main()) < 5


def test_two_callers_waiting_for_one_step_both_get_its_outcome(workers) -> None:
    release = threading.Event()

    async def main() -> list[int]:
        step = workers.run(lambda: release.wait(5) and 9)
        callers = [asyncio.create_task(patiently(step, 10)) for _ in range(2)]
        await asyncio.sleep(0.01)
        release.set()
        return list(await asyncio.gather(*callers))

    assert asyncio.run(main()) == [9, 9]
