"""The latest full self-check report, on its way to the fleet. The service builds this sink at
start whether or not telemetry is configured; the reporter (:mod:`.reporter`, which only a
service with telemetry imports) takes what it holds."""

from __future__ import annotations

from typing import Any


class LatestReport:
    """The sink of full self-check reports: the self-check puts each one here as it is made,
    the reporter publishes the latest (retained) when it next looks."""

    def __init__(self) -> None:
        self.report: dict[str, Any] | None = None

    def put(self, report: dict[str, Any]) -> None:
        self.report = report

    def take(self) -> dict[str, Any] | None:
        report, self.report = self.report, None
        return report
