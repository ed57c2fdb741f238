"""The stage breakdown (issue 26): marks are kept only when enabled, follow a request into a
worker thread, and the summary gives each stage the time since the mark before it."""

import asyncio
import time

from agent import stages


def test_nothing_is_kept_unless_enabled(monkeypatch) -> None:
    monkeypatch.setattr(stages, "ENABLED", False)
    token = stages.begin("read")
    stages.mark("decoded")
    stages.end(token, "answered")
    assert token is None and stages.summary()["requests"] == 0


def test_marks_follow_the_request_into_a_worker_thread(monkeypatch) -> None:
    monkeypatch.setattr(stages, "ENABLED", True)
    stages.summary()  # start empty

    async def request() -> None:
        token = stages.begin("read")
        stages.mark("decoded")
        await asyncio.to_thread(stages.mark, "worker")
        stages.end(token, "answered")

    async def two() -> None:
        await asyncio.gather(request(), request())

    asyncio.run(two())
    stages.mark("outside a request")  # no request being served: ignored
    summary = stages.summary()
    assert summary["requests"] == 2
    assert list(summary["stages_us"]) == ["decoded", "worker", "answered"]
    assert all(figures["count"] == 2 for figures in summary["stages_us"].values())
    assert summary["total_us"]["p50"] >= 0
    assert stages.summary()["requests"] == 0  # asking resets


def test_a_stage_on_one_thread_tells_its_cpu_time_from_its_waiting(monkeypatch) -> None:
    """The breakdown tells work from waiting: a stage spent blocked (a disk sync, a module's
    answer) has its wall time but next to no CPU time; a hand-off between threads has none."""
    monkeypatch.setattr(stages, "ENABLED", True)
    stages.summary()

    def spin(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    async def request() -> None:
        token = stages.begin("read")
        spin(0.02)
        stages.mark("worked")
        time.sleep(0.05)
        stages.mark("waited")
        await asyncio.to_thread(stages.mark, "handed-off")
        stages.end(token, "answered")

    asyncio.run(request())
    summary = stages.summary()
    worked, waited = summary["stages_us"]["worked"], summary["stages_us"]["waited"]
    assert worked["cpu_us"]["p50"] >= 20_000
    assert waited["p50"] >= 50_000 and waited["cpu_us"]["p50"] < 10_000
    assert "cpu_us" not in summary["stages_us"]["handed-off"]
    assert "cpu_us" not in summary["stages_us"]["answered"]  # back on the loop's thread
    on_cpu = summary["on_cpu_us"]["p50"]
    assert worked["cpu_us"]["p50"] <= on_cpu < worked["cpu_us"]["p50"] + 10_000
