"""The conformance run: every case in order, against one module through its driver."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.conformance import faults as fault_cases
from drivers.conformance import line
from drivers.conformance.case import run_case
from drivers.conformance.commands import CommandCases, KeyOptions
from drivers.conformance.faults import FaultInjection
from drivers.conformance.report import CaseResult, Outcome, Report
from drivers.conformance.vectors import KNOWN_ANSWERS
from drivers.module import CardModule, KeyFamily

# The slots of the documented test TMKs (DESIGN.md section 5): 0 DES, 1 SM4. A module with one
# slot answers KEY_STATUS for slot 1 with bad parameter: then slot 1 is left out.
DEFAULT_SLOTS = (0, 1)


@dataclass(frozen=True)
class Options:
    """``slots`` to check (those in ``optional_slots`` may be absent from the module), what the
    key cases may do, ``faults`` the line can be given (None: none), and ``starting``, told
    the name of each case as it starts (progress)."""

    slots: tuple[int, ...] = DEFAULT_SLOTS
    optional_slots: frozenset[int] = frozenset({1})
    keys: KeyOptions = field(default_factory=KeyOptions)
    faults: FaultInjection | None = None
    starting: Callable[[str], None] = lambda name: None


class _Run:
    """The report as it grows; once a case that the rest need fails, the rest are skipped."""

    def __init__(self, options: Options) -> None:
        self.report = Report()
        self.options = options
        self.blocked: str | None = None

    def case(self, name: str, body: Callable[[], str]) -> CaseResult:
        if self.blocked is not None:
            result = CaseResult(name, Outcome.SKIPPED, self.blocked)
        else:
            self.options.starting(name)
            result = run_case(name, body)
        self.report.cases.append(result)
        return result


def _mac_name(family: KeyFamily | None, from_r: bool) -> str:
    if family is None:  # KEY_STATUS failed
        return "MAC from R" if from_r else "MAC over the MAB"
    answers = KNOWN_ANSWERS[family]
    return f"MAC 0x{answers.mac_from_r if from_r else answers.mac_over_mab:02X}"


def run(module: CardModule, options: Options) -> Report:
    checks = CommandCases(module, options.keys)
    cases = _Run(options)
    if cases.case("PING", checks.ping).outcome is Outcome.FAILED:
        cases.blocked = "the module did not answer PING"
    cases.case("INFO", checks.info)
    cases.report.info = checks.module_info
    cases.case("RTC", checks.rtc)

    slots = []
    for slot in options.slots:
        optional = slot in options.optional_slots
        result = cases.case(
            f"KEY_STATUS slot {slot}", lambda s=slot, o=optional: checks.key_status(s, optional=o)
        )
        absent = optional and result.outcome is Outcome.SKIPPED and cases.blocked is None
        if not absent:
            slots.append(slot)
    for slot in slots:
        cases.case(f"test TMK slot {slot}", lambda s=slot: checks.test_tmk(s))
    cases.case("TUSN", checks.tusn)
    cases.case("TUSN ciphertext", checks.tusn_ciphertext)

    for slot in slots:
        family = checks.family(slot)
        cases.case(
            f"LOAD_WORKING_KEYS of the other family, slot {slot}",
            lambda s=slot: checks.wrong_family(s),
        )
        cases.case(f"LOAD_WORKING_KEYS slot {slot}", lambda s=slot: checks.load_working_keys(s))
        cases.case(f"KCV mismatch slot {slot}", lambda s=slot: checks.kcv_mismatch(s))
        for from_r in (True, False):
            cases.case(
                f"{_mac_name(family, from_r)} slot {slot}",
                lambda s=slot, r=from_r: checks.mac(s, from_r=r),
            )
        cases.case(f"ENCRYPT slot {slot}", lambda s=slot: checks.encrypt(s))
        cases.case(f"PIN_BLOCK slot {slot}", lambda s=slot: checks.pin_entry(s))

    cases.case("repeated SEQ", lambda: line.repeated_seq(module))
    cases.case("noise and a damaged frame", lambda: line.noise_and_damage(module))
    first = slots[0] if slots else 0
    cases.case("noisy line", lambda: fault_cases.noisy_line(module, options.faults, first))
    cases.case("unplug and replug", lambda: fault_cases.unplug_and_replug(module, options.faults))
    return cases.report
