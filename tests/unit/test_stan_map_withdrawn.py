"""Withdrawn answers (agent/transaction/stan_map.py): kept out of replays within the window, and
forgotten once out of it, so a terminal that withdraws one now and then keeps nothing forever."""

from __future__ import annotations

import time

from agent.transaction.stan_map import StanMap


def test_withdrawn_answers_are_kept_for_the_window_then_forgotten(monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    stans = StanMap(journal=None, reversals=None, replay_window=lambda: 120.0)  # type: ignore[arg-type]
    stans.withdraw(1)
    clock[0] += 60
    stans.withdraw(2)
    stans.withdraw(1)  # again: counted from now
    assert list(stans._withdrawn) == [2, 1]
    clock[0] += 121
    stans.withdraw(3)
    assert list(stans._withdrawn) == [3]
    for n in range(4, 10_004):
        clock[0] += 1
        stans.withdraw(n)
    assert len(stans._withdrawn) == 121  # those of the last 120 s, and the newest
