"""The queue of what the host asks (DESIGN.md section 4), and what every answer feeds it."""

from __future__ import annotations

import asyncio

import pytest

from agent.session.requirements import Heard, Pacing, RequirementQueue
from agent.wire.frame import Frame, Header, Layout, Tpdu
from agent.wire.message import Message


def answer(code: str, requirement: int, mti: str = "0810", nm_code: str = "371") -> Frame:
    message = Message(mti, {39: code, 60: f"00000001{nm_code}"})
    return Frame(Layout.TPDU, message, Tpdu(), Header().with_processing_requirement(requirement))


async def taken(queue: RequirementQueue, count: int) -> list[int]:
    """What the queue gives, ``count`` in turn, each finished before the next."""
    order = []
    for _ in range(count):
        order.append(await asyncio.wait_for(queue.take(), 1))
        queue.finished()
    return order


def test_requirements_run_one_at_a_time_in_the_order_raised_each_once() -> None:
    async def scenario():
        queue = RequirementQueue(Pacing)
        for requirement in (4, 5, 4, 9, 0):
            queue.raised(requirement)
        first = await queue.take()
        queue.raised(4)  # raised again while it runs: not queued a second time
        queue.finished()
        assert [first, *await taken(queue, 2)] == [4, 5, 9]
        await asyncio.wait_for(queue.idle(), 1)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("ends", "loop"),
    [
        ({3: ("003", 4), 4: ("371", 3)}, [3, 4]),  # a sign-in's 0810 asks 4, the CA keys 3
        ({3: ("003", 4), 4: ("371", 5), 5: ("381", 3)}, [3, 4, 5]),  # round three chains
    ],
)
def test_chains_that_raise_each_other_stop_where_they_come_round(ends, loop) -> None:
    """Each chain's end asks for the next: the chain that led to it is not run again from its
    end (the header is not MACed: a sign-in and CA keys raising each other filled the
    journal's disk with sign-ins)."""

    async def scenario():
        queue = RequirementQueue(lambda: Pacing(repeat_after=600))
        ran = []
        queue.raised(3)
        for _ in range(10):
            try:
                requirement = await asyncio.wait_for(queue.take(), 0.2)
            except TimeoutError:
                break  # nothing more raised
            ran.append(requirement)
            by, asks = ends[requirement]
            queue.raised(asks, by=by)  # the chain's end message, before it is done
            queue.satisfied(requirement)
            queue.finished()
        assert ran == loop
        await asyncio.wait_for(queue.idle(), 1)

    asyncio.run(scenario())


async def ran(queue: RequirementQueue, done: bool = True) -> int:
    """The next requirement run as HostRequests runs it: satisfied (when ``done``), then
    finished."""
    requirement = await asyncio.wait_for(queue.take(), 1)
    if done:
        queue.satisfied(requirement)
    queue.finished()
    return requirement


def test_each_sign_in_whose_answer_asks_4_gets_the_ca_keys_within_the_pause() -> None:
    """Sign-ins (the app's, recovery's) whose 0810 asks 4: the end of another chain raising it,
    acted on each time, however soon after the last CA keys' download."""

    async def scenario():
        queue = RequirementQueue(lambda: Pacing(repeat_after=600))
        for _ in range(3):
            queue.raised(4, by="003")
            assert await ran(queue) == 4
        queue.raised(4)  # an app's answer still carrying it: a repeat within the pause
        await asyncio.wait_for(queue.idle(), 1)

    asyncio.run(scenario())


def test_a_failed_chained_run_leaves_nothing_that_counts_against_a_later_chain() -> None:
    """A chained run that failed, then the requirement done in the ordinary way after the pause:
    the next chain's raise within the pause is acted on, not taken for a loop."""

    async def scenario():
        queue = RequirementQueue(lambda: Pacing(repeat_after=0.3))
        queue.raised(4)
        assert await ran(queue) == 4
        queue.raised(4, by="003")  # chained within the pause; its run fails
        assert await ran(queue, done=False) == 4
        await asyncio.sleep(0.35)  # the pause passes
        queue.raised(4)  # an ordinary raise, done
        assert await ran(queue) == 4
        queue.raised(4, by="003")  # a chain within the new pause: its first, acted on
        assert await ran(queue) == 4

    asyncio.run(scenario())


def test_the_repeat_pause_never_holds_a_requirement_another_chains_end_raises() -> None:
    async def scenario():
        queue = RequirementQueue(lambda: Pacing(repeat_after=600))
        for requirement in (4, 5):
            queue.raised(requirement)
            assert await taken(queue, 1) == [requirement]
            queue.satisfied(requirement)
        queue.raised(5)  # an answer still carries it: just done
        queue.raised(5, by="381")  # the end of the IC parameters' own chain: a repeat too
        await asyncio.wait_for(queue.idle(), 1)
        queue.raised(5, by="371")  # the end of the CA keys chain asks for IC parameters
        assert await taken(queue, 1) == [5]
        queue.raised(4, by="003")  # a sign-in's 0810: the host changed its CA keys since
        assert await taken(queue, 1) == [4]
        queue.satisfied(3)
        queue.raised(3, by="003")  # a sign-in's own answer asking another: not a loop
        await asyncio.wait_for(queue.idle(), 1)

    asyncio.run(scenario())


def test_every_answer_feeds_the_queue_but_a_refusals_sign_in_and_the_clock_hears_them_all() -> None:
    async def scenario():
        queue = RequirementQueue(Pacing)
        seen: list[str] = []
        heard = Heard(lambda message: seen.append(message.text(39)), queue)
        heard(answer("97", 3))  # a refusal's sign-in is recovery's
        heard(answer("97", 6))  # and its re-provisioning
        heard(answer("97", 4))  # what else it asks is the queue's
        heard(answer("00", 0))
        heard(answer("00", 5, mti="0210"))
        assert seen == ["97", "97", "97", "00", "00"]
        assert await taken(queue, 2) == [4, 5]
        await asyncio.wait_for(queue.idle(), 1)
        Heard(seen.append, None)(answer("00", 4))  # pass-through: the app's session
        await asyncio.wait_for(queue.idle(), 1)

    asyncio.run(scenario())
