"""The agent's one back-off: exponential, capped, never at once, and spread (equal jitter)."""

import contextlib
import statistics

import tenacity

from agent.backoff import Backoff, jittered, pause


def ceiling(first: float, longest: float, failures: int) -> float:
    """The longest pause after ``failures`` failures: the exponential, capped."""
    return min(first * 2 ** (failures - 1), longest)


def test_pauses_grow_to_the_cap_and_stay_within_half_and_whole() -> None:
    for failures in range(1, 12):
        longest = ceiling(1.0, 60.0, failures)
        for _ in range(50):
            assert longest / 2 <= pause(1.0, 60.0, failures) <= longest


def test_never_at_once_not_even_before_the_first_failure() -> None:
    """A count of 0 (a caller that has not failed yet) is the first failure's pause."""
    for failures in (0, 1):
        assert all(0.25 <= pause(0.5, 30.0, failures) <= 0.5 for _ in range(200))


def test_a_host_down_for_days_stays_at_the_cap() -> None:
    """A loop that fails every minute for a week counts past 10,000: still the cap, and no
    overflow of the exponential."""
    for failures in (65, 1_024, 10_080, 10**9):
        assert all(30.0 <= pause(1.0, 60.0, failures) <= 60.0 for _ in range(50))


def test_a_fleet_does_not_retry_in_lock_step() -> None:
    """1,000 terminals after the same outage: their fifth tries spread over seconds."""
    fifth = [pause(1.0, 600.0, 5) for _ in range(1000)]
    assert statistics.pstdev(fifth) > 1.0  # the uniform half of 16 s has a spread of 2.3 s
    assert len({round(p, 3) for p in fifth}) > 900


def test_the_random_half_covers_its_whole_range() -> None:
    """Equal jitter: the pause is e/2 plus a uniform draw from [0, e/2], so pauses reach from
    near e/2 to near e, and average 3e/4."""
    pauses = [pause(2.0, 600.0, 4) for _ in range(4000)]  # e = 16 s
    assert min(pauses) < 8.0 + 0.4 and max(pauses) > 16.0 - 0.4
    assert abs(statistics.fmean(pauses) - 12.0) < 0.3  # 8 standard errors of the mean


def test_a_success_starts_over() -> None:
    backoff = Backoff(2.0, 30.0)
    assert 1.0 <= backoff.failed() <= 2.0
    assert 2.0 <= backoff.failed() <= 4.0
    backoff.succeeded()
    assert 1.0 <= backoff.failed() <= 2.0


def test_tenacity_waits_the_same_pauses_between_its_tries() -> None:
    """Where tenacity runs the tries, jittered() is its wait: the pauses it sleeps are this
    module's, try after try, up to the cap."""
    slept: list[float] = []
    failures = 0

    def fails() -> None:
        nonlocal failures
        failures += 1
        raise OSError("the host did not answer")

    retrying = tenacity.Retrying(
        sleep=slept.append,
        stop=tenacity.stop_after_attempt(6),
        wait=jittered(1.0, 8.0),
        reraise=True,
    )
    with contextlib.suppress(OSError):  # the sixth failure is the last
        retrying(fails)
    assert failures == 6 and len(slept) == 5
    for tries, pause_slept in enumerate(slept, start=1):
        longest = ceiling(1.0, 8.0, tries)
        assert longest / 2 <= pause_slept <= longest
