"""A host's refusal that recovery attributed to the request, not to the terminal (DESIGN.md
section 7 point 4, section 17): which finding it is, what the merchant is told, and how many of
each kind there were."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass

from agent import messages
from agent.messages import Bilingual, Text


class A2(enum.StrEnum):
    """What went to the host in field 59 usage A2, for a class that must carry one."""

    MODULE = "module"  # the agent built it through the card module
    APP = "app"  # the app's own, well-formed
    MISSING = "missing"  # none went out (registration.tusn = "app" or "off")
    MALFORMED = "malformed"  # the app's, not well-formed


@dataclass(frozen=True)
class A2Sent:
    """Field 59 A2 of a request as it left: how, and the TUSN it named (empty when none)."""

    status: A2
    tusn: str = ""
    problem: str = ""  # what is wrong with a malformed one


FINDINGS = {
    A2.MISSING: "registration.a2-missing",
    A2.MALFORMED: "registration.a2-malformed",
    A2.MODULE: "registration.tusn-refused",
    A2.APP: "registration.tusn-refused",
}
# A refusal of a class that carries no A2: field 59 cannot explain it.
OTHER = "request.refused"


def finding(a2: A2Sent | None) -> str:
    return FINDINGS[a2.status] if a2 is not None else OTHER


def advice(a2: A2Sent | None, code: str, code_text: Bilingual) -> Text:
    """What the merchant is told about this one refused request: never "register the
    terminal", which is registered (its sign-in was approved)."""
    if a2 is None:
        return messages.message("request.refused", code=code, meaning=code_text)
    if a2.status is A2.MISSING:  # the self-check's a2-missing says it of the last purchase
        return messages.message("registration.a2-missing:refused-request", code=code)
    if a2.status is A2.MALFORMED:
        return messages.message("registration.a2-malformed", code=code, problem=a2.problem)
    return messages.message("registration.tusn-refused", code=code, tusn=a2.tusn or "?")


class RefusalCounts:
    """Refusals attributed to requests, by finding: what ``agent status`` shows, and the last
    one for the self-check's registration check."""

    def __init__(self) -> None:
        self.by_finding: Counter[str] = Counter()
        self.last: dict[str, object] | None = None

    def add(self, finding: str, detail: dict[str, object]) -> None:
        self.by_finding[finding] += 1
        self.last = {"finding": finding, **detail}
