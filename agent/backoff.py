"""The one shape of every back-off in the agent: exponential from ``first`` seconds, capped at
``longest``, with "equal jitter" (half of each pause fixed, half random). A fleet of terminals
that lost the same acquirer then comes back spread over time instead of in lock-step, and no
terminal ever tries again at once. A loop of the agent takes its pauses from :class:`Backoff`
(host connections, queued reversals, the sign-in probe, supervised background tasks); where
tenacity runs the tries (the downloads a host asks for, recovery's retries), :func:`jittered` is
its ``wait=``."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tenacity

# Doublings past this outgrow any cap; without a limit, 2.0 ** 1024 would overflow after a
# host has been down long enough.
MAX_DOUBLINGS = 64


def pause(first: float, longest: float, failures: int) -> float:
    """The pause after ``failures`` failures in a row (1 or more): between ``e/2`` and ``e``,
    where ``e`` is ``min(first * 2**(failures-1), longest)``."""
    doublings = min(max(failures, 1) - 1, MAX_DOUBLINGS)
    ceiling = min(first * 2.0**doublings, longest)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def jittered(first: float, longest: float) -> Callable[[tenacity.RetryCallState], float]:
    """:func:`pause` as tenacity's wait: tenacity calls it with the state of the try that
    just failed, whose ``attempt_number`` counts the tries so far."""
    return lambda state: pause(first, longest, state.attempt_number)


class Backoff:
    """The pauses of a loop that tries until it succeeds: :meth:`failed` after each failure
    gives the pause before the next try, :meth:`succeeded` starts over."""

    def __init__(self, first: float, longest: float) -> None:
        self.first, self.longest = first, longest
        self.failures = 0

    def failed(self) -> float:
        self.failures += 1
        return pause(self.first, self.longest, self.failures)

    def succeeded(self) -> None:
        self.failures = 0
