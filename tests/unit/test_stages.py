"""The stage breakdown (issue 26): marks are kept only when enabled, follow a request into a
worker thread, and the summary gives each stage the time since the mark before it."""

import asyncio

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
