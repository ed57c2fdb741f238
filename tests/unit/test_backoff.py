"""The agent's one back-off: exponential, capped, never at once, and spread (equal jitter)."""

import statistics

from agent.backoff import Backoff, pause


def test_pauses_grow_to_the_cap_and_stay_within_half_and_whole() -> None:
    for failures in range(1, 12):
        ceiling = min(1.0 * 2 ** (failures - 1), 60.0)
        for _ in range(50):
            assert ceiling / 2 <= pause(1.0, 60.0, failures) <= ceiling


def test_a_fleet_does_not_retry_in_lock_step() -> None:
    """1,000 terminals after the same outage: their fifth tries spread over seconds."""
    fifth = [pause(1.0, 600.0, 5) for _ in range(1000)]
    assert statistics.pstdev(fifth) > 1.0  # the uniform half of 16 s has a spread of 2.3 s
    assert len({round(p, 3) for p in fifth}) > 900


def test_a_success_starts_over() -> None:
    backoff = Backoff(2.0, 30.0)
    assert 1.0 <= backoff.failed() <= 2.0
    assert 2.0 <= backoff.failed() <= 4.0
    backoff.succeeded()
    assert 1.0 <= backoff.failed() <= 2.0
