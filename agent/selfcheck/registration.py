"""Registration (DESIGN.md sections 6 and 17): would the acquirer refuse this terminal's
purchases for their terminal hardware serial number (TUSN)? The module answers TUSN well formed,
the TUSN is the one the TMS holds, the last purchases carried A2, the acquirer's own check (the
`registration-check` hook) says it is reported, a location source answers where A5 is wanted,
and the last refusal of a request for its TUSN, if there was one."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field

from agent import messages
from agent.journal import PATIENCE, JournalError
from agent.messages import Text
from agent.provisioning import ProvisioningError
from agent.registration.location import a5_from_hook
from agent.selfcheck.base import CheckResult, Context, Status
from agent.wire import field59
from drivers.module import ModuleError, ModuleProtocolError, ModuleStatusError, TusnAnswer
from drivers.module import Status as ModuleStatus
from firmware_hooks import Outcome

ID = "registration"
PROBE_FACTOR = "000000"  # any 6 digits: the check asks for the TUSN, not a real card's ciphertext
RECENT = 24 * 3600.0  # a refusal of a request within this is reported
_PURCHASES = 20  # the last requests of the classes that carry A2 looked at
# Of the check's deadline, what its hooks (the acquirer's check, then the location) may take
# together: a hook that hangs is cut while the check can still report what it found.
_HOOKS_PART = 0.75


@dataclass
class _Findings:
    """What the parts of the check found: each problem as the result it would give alone, the
    first failure reported, else the first warning, the others in its detail."""

    problems: list[CheckResult] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)

    def result(self, clean: CheckResult, data: dict[str, object]) -> CheckResult:
        """The worst problem, or ``clean`` (ok, or a skip) when no part found one."""
        worst_first = sorted(self.problems, key=lambda p: p.status is not Status.FAIL)
        if not worst_first:
            return dataclasses.replace(clean, detail="; ".join(self.detail), data=data)
        worst, *others = worst_first
        also = [f"also {o.finding}: {o.summary.en}" for o in others]
        return dataclasses.replace(worst, detail="; ".join(self.detail + also), data=data)


def tusn_problem(answer: TusnAnswer) -> str | None:
    """What is wrong with the module's TUSN: the manufacturer number CUP assigned (6 digits),
    the device type (2 digits, the same as the answer's), then the serial."""
    return field59.tusn_layout_problem(
        answer.tusn, answer.device_type, "the module answers device type"
    )


async def check(context: Context) -> CheckResult:
    config = context.config.registration
    found = _Findings()
    data: dict[str, object] = {"mode": config.tusn}
    hooks_until = time.monotonic() + context.config.selftest.deadline * _HOOKS_PART
    tusn, unread = await _module_tusn(context, found, data)
    if tusn:
        await _against_tms(context, tusn, found)
        await _acquirers_check(context, tusn, found, hooks_until)
    await _last_purchases(context, found)
    if config.location:
        await _location(context, found, hooks_until)
    await _last_refusal(context, found, data)
    if config.tusn == "off":  # the first warning: it explains the others
        off = CheckResult.of(ID, Status.WARN, finding="a2-missing", variant="off")
        found.problems.insert(0, off)
    if unread is not None:  # nothing else found: the TUSN, what the check is about, is unknown
        return found.result(unread, data)
    return found.result(CheckResult.of(ID, Status.OK, tusn=tusn or "-"), data)


async def _module_tusn(
    context: Context, found: _Findings, data: dict[str, object]
) -> tuple[str, CheckResult | None]:
    """The module's TUSN ("" when it has none or cannot say), and, when the module could not
    be asked, the skip the check gives unless it finds a problem elsewhere."""
    if context.module is None:
        found.detail.append("no card module: TUSN not asked")
        return "", CheckResult.of(ID, Status.SKIP)
    try:
        answer = await context.module_call(context.module.tusn, PROBE_FACTOR)
    except ModuleStatusError as exc:
        if exc.status in (ModuleStatus.KEY_ABSENT, ModuleStatus.UNKNOWN_COMMAND):
            found.problems.append(CheckResult.of(ID, Status.FAIL, finding="tusn-absent"))
            found.detail.append(str(exc))
            return "", None
        unread: ModuleError = exc
    except ModuleProtocolError as exc:
        found.problems.append(_malformed(str(exc)))
        found.detail.append(str(exc))
        return "", None
    except ModuleError as exc:  # the module check says why the module does not answer
        unread = exc
    else:
        problem = tusn_problem(answer)
        if problem is not None:
            found.problems.append(_malformed(problem))
        data.update(tusn=answer.tusn, device_type=answer.device_type)
        found.detail.append(f"module TUSN {answer.tusn}, device type {answer.device_type}")
        return answer.tusn, None
    found.detail.append(f"TUSN not asked: {unread}")
    return "", CheckResult.of(ID, Status.SKIP, variant="not-asked", error=str(unread))


def _malformed(problem: str) -> CheckResult:
    return CheckResult.of(ID, Status.FAIL, finding="tusn-malformed", problem=problem)


async def _against_tms(context: Context, tusn: str, found: _Findings) -> None:
    if not context.config.tms.url:
        return
    try:
        record = await context.tms_record()
    except (ProvisioningError, ModuleError) as exc:
        found.detail.append(f"TMS not consulted: {exc}")
        return
    if record.tusn and record.tusn != tusn:
        found.problems.append(
            CheckResult.of(
                ID, Status.FAIL, finding="tusn-differs-from-tms", tusn=tusn, tms_tusn=record.tusn
            )
        )


def _hooks_budget(context: Context, hooks_until: float) -> float:
    """What the hooks of one event may take: the hook timeout, within what is left."""
    return max(0.0, min(context.config.hooks.timeout, hooks_until - time.monotonic()))


async def _acquirers_check(
    context: Context, tusn: str, found: _Findings, hooks_until: float
) -> None:
    """The vendor's `registration-check` hook asks the acquirer whether the TUSN is reported."""
    if context.hooks is None or not context.hooks.hooks_for("registration-check"):
        return
    config = context.config
    payload = {"tid": config.terminal.tid, "mid": config.terminal.mid, "tusn": tusn}
    budget = _hooks_budget(context, hooks_until)
    for result in await context.hooks.ask("registration-check", payload, budget=budget):
        output = result.output or {}
        if result.outcome is not Outcome.DONE or not isinstance(output.get("reported"), bool):
            found.detail.append(f"registration-check {result.hook}: "
                                f"{result.detail or 'no {reported: bool} printed'}")  # fmt: skip
            continue
        said = _shown(output.get("detail", ""))
        if not output["reported"]:
            reason = (
                messages.message("registration:acquirer-says", said=said)
                if said
                else messages.EMPTY
            )
            found.problems.append(
                CheckResult.of(
                    ID, Status.FAIL, finding="tusn-not-reported", tusn=tusn, reason=reason
                )
            )
        else:
            found.detail.append(
                f"the acquirer has TUSN {tusn} reported{': ' + said if said else ''}"
            )
        return


def _shown(text: object) -> str:
    """Text from a hook, as it may be shown: printable, clipped."""
    value = str(text)
    return "".join(c if c.isprintable() else "?" for c in value)[:120]


async def _last_purchases(context: Context, found: _Findings) -> None:
    """Whether the last purchases and pre-authorisations went out with an A2."""
    journal = context.journal
    if journal is None:
        return
    since = context.now() - RECENT
    try:
        rows = await journal.within(PATIENCE, journal.transactions, since)
    except JournalError as exc:  # the storage check says what the journal has
        found.detail.append(f"journal not read: {exc}")
        return
    carried = [_carried_a2(row) for row in rows]
    recent = [c for c in carried if c is not None][-_PURCHASES:]
    if recent and not recent[-1]:
        found.problems.append(CheckResult.of(ID, Status.WARN, finding="a2-missing"))
    if recent:
        found.detail.append(f"A2 on {sum(recent)} of the last {len(recent)} purchases")


def _carried_a2(row: dict[str, object]) -> bool | None:
    """For a purchase or pre-authorisation row: whether its request carried a readable A2;
    None for the other classes."""
    try:
        request = json.loads(str(row["request"]))
        fields = request["fields"]
    except (ValueError, KeyError, TypeError):
        return None
    mti, processing = request.get("mti"), str(fields.get("3", ""))
    purchase = (
        mti == "0200" and processing.startswith("00") and str(fields.get("60", ""))[:2] == "22"
    )
    pre_auth = mti == "0100" and processing.startswith("03")
    if not (purchase or pre_auth):
        return None
    return "A2=[" in str(fields.get("59", ""))  # the journal keeps 59 masked, usages shown


async def _location(context: Context, found: _Findings, hooks_until: float) -> None:
    problem = ""
    if context.hooks is None or not context.hooks.hooks_for("location"):
        problem = "no location hook is installed"
    else:
        budget = _hooks_budget(context, hooks_until)
        problems = []
        for result in await context.hooks.ask("location", {}, budget=budget):
            try:
                if result.outcome is Outcome.DONE and result.output is not None:
                    a5_from_hook(result.output)
                    found.detail.append(f"location from {result.hook}")
                    return
                problems.append(f"{result.hook}: {result.detail or 'printed nothing'}")
            except ValueError as exc:
                problems.append(f"{result.hook}: {exc}")
        problem = "; ".join(problems)
    found.problems.append(
        CheckResult.of(ID, Status.WARN, finding="location-unavailable", problem=problem)
    )


async def _last_refusal(context: Context, found: _Findings, data: dict[str, object]) -> None:
    """A request refused for its A2 since yesterday: the acquirer's own answer."""
    journal = context.journal
    if journal is None:
        return
    try:
        events = await journal.within(PATIENCE, journal.events, context.now() - RECENT)
    except JournalError as exc:  # the storage check says what the journal has
        found.detail.append(f"journal not read: {exc}")
        return
    refusals = [e for e in events if e.get("kind") == "request-refused"]
    if not refusals:
        return
    last = refusals[-1]
    finding = str(last.get("finding", ""))
    data["last_refusal"] = {k: last.get(k) for k in ("finding", "code", "class", "tusn", "at")}
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(last.get("at", 0))))
    if not finding.startswith("registration."):
        found.detail.append(f"a {last.get('class')} was refused with {last.get('code')} at {when}")
        return
    # the acquirer's finding, said as a refusal of requests rather than as the check finds it
    told = Text(str(last.get("message_en", "")), str(last.get("message_zh", "")))
    summary, remedy = messages.said(
        "registration:refused-requests", count=len(refusals), when=when, told=told
    )
    found.problems.append(
        CheckResult(
            ID,
            Status.FAIL,
            summary,
            remedy=remedy,
            finding=finding.removeprefix("registration."),  # the code puts the check's id before it
        )
    )
