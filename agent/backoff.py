"""The one shape of every back-off in the agent: exponential from ``first`` seconds, capped at
``longest``, with "equal jitter" (half of each pause fixed, half random). A fleet of terminals
that lost the same acquirer then comes back spread over time instead of in lock-step, and no
terminal ever tries again at once. Built from tenacity's wait strategies, whether tenacity runs
the tries (the downloads a host asks for) or a loop of the agent does (host connections, queued
reversals, the sign-in probe, supervised background tasks)."""

from __future__ import annotations

import tenacity


def jittered(first: float, longest: float) -> tenacity.wait.wait_base:
    """The wait strategy: after the n-th failure between ``e/2`` and ``e``, where ``e`` is
    ``min(first * 2**(n-1), longest)``."""
    fixed = tenacity.wait_exponential(multiplier=first / 2, max=longest / 2)
    return fixed + tenacity.wait_random_exponential(multiplier=first / 2, max=longest / 2)


def pause(first: float, longest: float, failures: int) -> float:
    """The pause after ``failures`` failures in a row (1 or more)."""
    state = tenacity.RetryCallState(None, None, (), {})
    state.attempt_number = max(failures, 1)
    return jittered(first, longest)(state)


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
