"""What a conformance run found: one result per case, and the module it ran against."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from drivers.module import ModuleInfo


class Outcome(enum.Enum):
    PASSED = "pass"
    FAILED = "fail"
    SKIPPED = "skip"  # cannot run against this module (or this driver): the detail says why


@dataclass(frozen=True)
class CaseResult:
    name: str
    outcome: Outcome
    detail: str  # what was seen; for a failure what was expected instead, for a skip why


@dataclass
class Report:
    cases: list[CaseResult] = field(default_factory=list)
    info: ModuleInfo | None = None  # from the INFO case, when it passed

    def count(self, outcome: Outcome) -> int:
        return sum(case.outcome is outcome for case in self.cases)

    @property
    def ok(self) -> bool:
        """No case failed (skipped ones say what was not proven)."""
        return self.count(Outcome.FAILED) == 0
