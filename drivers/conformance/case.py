"""One case of a conformance run: a body that says what it saw, and how its end is recorded."""

from __future__ import annotations

from collections.abc import Callable

from drivers.conformance.report import CaseResult, Outcome
from drivers.module import ModuleError


class Failed(Exception):
    """The module or driver answered wrong: the message says what was expected and what came."""


class Skipped(Exception):
    """The case cannot run against this module or driver: the message says why."""


def expect(condition: bool, failure: str) -> None:
    if not condition:
        raise Failed(failure)


def hex_of(data: bytes) -> str:
    return data.hex().upper()


def run_case(name: str, body: Callable[[], str]) -> CaseResult:
    """Run ``body``; what it returns is the detail of a pass. A driver's own exception is the
    case's failure, named, never the end of the run: proving drivers is what the run is for."""
    try:
        detail = body()
    except Skipped as why:
        return CaseResult(name, Outcome.SKIPPED, str(why))
    except Failed as what:
        return CaseResult(name, Outcome.FAILED, str(what))
    except ModuleError as error:
        return CaseResult(name, Outcome.FAILED, str(error))
    except Exception as error:
        detail = f"the driver raised {type(error).__name__}: {error}"
        return CaseResult(name, Outcome.FAILED, detail)
    return CaseResult(name, Outcome.PASSED, detail)
