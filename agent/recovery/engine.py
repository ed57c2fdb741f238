"""A recovery run: journal the refusal, self-check, apply the remedies the policy picks, retry the
request (bounded, tenacity), decide whose refusal it is (DESIGN.md section 7 point 4): the
request's when a sign-in of this recovery was approved and the request is still refused, the
terminal's (the unregistered state) when the sign-in itself is refused or every kind of request
is, nobody's yet when the host did not answer; the background sign-in probe while
unregistered. What the host's header asks for alongside an answer it did not refuse is the
session's (:mod:`agent.session.requirements` hears every answer on the link)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from agent import messages
from agent.backoff import Backoff, jittered
from agent.blocking import Gate, patiently
from agent.host.signin import SignInError
from agent.keys.tmk_download import keys_refused as module_refused_keys
from agent.messages import Text
from agent.recovery import incident as incidents
from agent.recovery.incident import HostIncident
from agent.recovery.policy import (
    KEYS_REFUSED,
    LOAD_TMK,
    PERSON_MUST_ACT,
    TMK_DOWNLOAD_REPAIRS,
    State,
    decide,
    refused,
    unregistered_message,
)
from agent.recovery.remedies import (
    HostSilent,
    KeysRefused,
    Remedies,
    RemedyFailed,
    SignInRefused,
)
from agent.registration.a2 import Outgoing59
from agent.registration.refusals import RefusalCounts, advice, finding
from agent.transaction.classes import classify
from agent.transaction.sender import Attempt, agent_reason, local_answer
from agent.wire import codes
from agent.wire.builders import response_mti
from agent.wire.message import Message
from agent.wire.pin import carries_pin
from drivers.module import ModuleError

if TYPE_CHECKING:
    import tenacity

    from agent.config import RecoveryConfig
    from agent.journal import Journal
    from agent.selfcheck import Report

log = logging.getLogger(__name__)


class NothingLeftToTry(Exception):
    pass


class Caller:
    """Where the one waiting for a recovery (a request's or a sign-in's caller) stands: answered
    at ``recovery.deadline`` while a remedy still ran (``gone``: the repair goes on, its request
    is not retried any more) or waiting for a retry of its request on its way (``retrying``:
    it may be approved, so the caller waits for it past the deadline)."""

    __slots__ = ("gone", "retrying")

    def __init__(self) -> None:
        self.gone = False
        self.retrying = False


# A refusal of the same kind as one just attributed to its request (same class, code and field
# 59 A2) is that request's too, without another sign-in, for this long after the last one.
SAME_REFUSAL_MEMORY = 300.0
# Pauses between recovery's retries: from 50 ms, doubling, at most 2 s (within its deadline).
RETRY_FIRST, RETRY_LONGEST = 0.05, 2.0


def tries(
    attempts: int, seconds: float, go_on: Callable[[Attempt], bool]
) -> tenacity.AsyncRetrying:
    """Recovery's retries (DESIGN.md section 7) as a tenacity ``AsyncRetrying``: at most
    ``attempts`` within ``seconds``, while ``go_on`` says the last one calls for another, the
    agent's back-off between them; the last try's result once they are over. Only what every
    tenacity since 8.2 has (Debian 12's): ``wait_exponential_jitter``'s ``multiplier`` came in
    9.2."""
    # imported here, by the first recovery: the service starts without tenacity's modules
    import tenacity

    return tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_after_delay(seconds),
        wait=jittered(RETRY_FIRST, RETRY_LONGEST),
        retry=tenacity.retry_if_result(go_on),
        retry_error_callback=lambda state: state.outcome.result(),
    )


PURCHASE = "purchase"  # the class every terminal sends (DESIGN.md section 15)


class Retry(Protocol):
    """How a request is sent again (:meth:`Sender.attempt`)."""

    def __call__(
        self, request: Message, field_59: Outgoing59 | None = None, *, wire_stan: str = ""
    ) -> Awaitable[Attempt]: ...


class Recovery:
    def __init__(
        self,
        remedies: Remedies,
        journal: Journal,
        retry: Retry,
        *,
        settings: Callable[[], RecoveryConfig],
        gate: Gate,
        incident: HostIncident | None = None,
    ) -> None:
        """``settings`` (attempts, deadline, probe pauses) are read at each use: a reload
        may change them. ``gate`` is where requests wait while a recovery runs. ``incident``:
        the host-side incident the fleet announces, if any (DESIGN.md section 7 point 5)."""
        self.gate = gate
        self.incident = incident or HostIncident()
        self._incident_signed_in: float | None = None  # monotonic: the last sign-in under one
        # the incident the probe's first sign-in was spread for, and not before when it goes
        self._probe_spread_for: float | None = None
        self._probe_not_before = 0.0
        self.remedies = remedies
        self.journal = journal
        self.retry = retry
        self._settings = settings
        self._state = State.REGISTERED
        self._changed = asyncio.Event()
        self.cause = ""  # the stable code of why the state is not registered (DESIGN.md 14)
        self.counts = {"97": 0, "recoveries": 0}  # since the start, for the fleet's counters
        self.message: Text | None = None
        self.last_refusal: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        # cleared while a recovery or the start-up sign-in runs: new requests wait for it
        self._probe: asyncio.Task[None] | None = None
        # the last recovery run: it may outlast its caller (answered at recovery.deadline)
        self._running: asyncio.Future[Attempt] | None = None
        self._host_silent = ""  # why a remedy of the running recovery got no answer, if one did
        self._signed_in = False  # whether a remedy of the running recovery signed in
        # whether the running recovery's request was answered unsent (its PIN block is stale)
        self._not_retried = False
        # the codes the host refused the running recovery's sign-ins with
        self._signin_refusals: list[str] = []
        # kinds of held request (sales, inquiries) approved lately, when, and not refused since
        # after a sign-in: while one works, the host is not refusing the terminal whatever it
        # sends
        self._working: dict[str, float] = {}
        # why the terminal itself is unregistered (cause, reason, action), whatever an incident
        # tells the merchant meanwhile
        self._own: tuple[str, Text, Text | None] | None = None
        self._tried: list[str] = []  # its remedies run, in order (a download may join the plan)
        # whether the module refused the keys of a sign-in the host approved, in this recovery
        self._keys_refused = False
        self._tmk_failed = ""  # why the master-key download of this recovery failed, if it did
        self.refused_requests = RefusalCounts()
        # classes refused as requests since the last approval: every kind refused is the
        # terminal's refusal after all
        # class name -> whether it carries A2, and the code it was refused with
        self._refused_classes: dict[str, tuple[bool, str]] = {}
        self._same_refusal: tuple[tuple[str, str, str], float] | None = None
        # the kind of a PIN request not sent again after an approved sign-in (its PIN block
        # was stale), and when: its next refusal is the one its retry would have met
        self._not_retried_kind: tuple[tuple[str, str, str], float] | None = None
        # a sign-in refused with a code not about the terminal, whose recovery was
        # inconclusive: (code, when); the same refusal again within SAME_REFUSAL_MEMORY starts
        # none (the app's retries, the host's requirement at every answer, the light check)
        self._signin_refused_lately: tuple[str, float] | None = None

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        if state is State.REGISTERED:
            self.cause = ""
        if state is not self._state:
            self._state = state
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def state_changed(self) -> None:
        """Return at the next change of state (``STATUS=`` and telemetry follow it at once)."""
        await self._changed.wait()

    # --------------------------------------------------------------------------- gateway

    def hold(self) -> tuple[str, str, str] | None:
        """While unregistered, the local answer for a financial request (code, finding, reason):
        no host traffic. The finding is the cause (``host.97-after-signin``)."""
        if self.state is not State.UNREGISTERED:
            return None
        assert self.message is not None
        return "97", self.cause, f"terminal not registered: {self.message.en}"

    async def after_response(self, request: Message, attempt: Attempt) -> Attempt:
        if not refused(attempt.answer):
            if codes.approved(attempt.answer.text(39, "")):
                self._approved(request)
            return attempt
        if self._known_request_refusal(request, attempt):
            return self._request_refused(request, attempt, again=True)
        if self._refused_again_after_signin(request, attempt):
            return self._request_refused(request, attempt)
        return await self._recover_from(request, attempt)

    # -------------------------------------------------------------------------- recovery

    async def recover(
        self, request: Message | None, answer: Message, *, keys_refused: bool = False
    ) -> Message:
        """Recover from ``answer``, the host's refusal of ``request``; ``None`` for a refused
        sign-in or reversal, where each remedy's own sign-in is the retry. ``keys_refused``: the
        host approved the sign-in (``answer``) but the module refused its keys (DESIGN.md
        section 18), a trigger of its own. Returns the final answer."""
        attempt = Attempt(answer, None)
        return (await self._recover_from(request, attempt, keys_refused)).answer

    async def after_sign_in_failed(self, failure: Exception) -> Message | None:
        """A sign-in outside a recovery (the start-up's, the app's, the host's requirement, a
        technician's) that failed with ``failure`` (the sender's error, or the remedy's):
        refused with a terminal-config or session code, or approved with keys the module
        refuses (DESIGN.md section 18), it is recovered from as section 7 says, each remedy's
        own sign-in the retry. Returns the final answer; None when ``failure`` is no such
        refusal (a host that did not answer, a journal that cannot write) or the probe of an
        unregistered terminal is on it already."""
        if self.state is State.UNREGISTERED:
            return None
        if isinstance(failure, SignInError | SignInRefused):
            code = failure.code if isinstance(failure, SignInRefused) else failure.response_code
            answer = Message("0810", {39: code or ""})
            lately = self._signin_refused_lately
            if (
                lately is not None
                and lately[0] == code
                and lately[1] > time.monotonic() - SAME_REFUSAL_MEMORY
            ):
                return None  # its recovery found nothing to repair a moment ago
            return await self.recover(None, answer) if refused(answer) else None
        if isinstance(failure, KeysRefused) or (
            isinstance(failure, ModuleError) and module_refused_keys(failure)
        ):
            return await self.recover(None, Message("0810", {39: "00"}), keys_refused=True)
        return None

    async def _recover_from(
        self, request: Message | None, attempt: Attempt, keys_refused: bool = False
    ) -> Attempt:
        answer = attempt.answer
        code = answer.text(39)
        if keys_refused:
            self.last_refusal = {"code": code, "mti": answer.mti, "at": time.time()}
            self._event("keys-refused", text=KEYS_REFUSED.en)
        else:
            self._refused(code, answer.mti)
        started = time.monotonic()  # recovery.deadline counts from the refusal
        if self._lock.locked():  # another request is already recovering: wait for it
            try:
                async with asyncio.timeout(self._left(started)):
                    async with self._lock:
                        pass
            except TimeoutError:
                return self._still_repairing(request, attempt)
            if self.state is State.UNREGISTERED or request is None:
                return attempt
            if carries_pin(request) and self._signed_in:  # the repair it waited for signed in
                return self._pin_again(request, "another request's repair")
            retried = await self._retry(request, attempt)
            if refused(retried.answer) and self._known_request_refusal(request, retried):
                # the recovery it waited for found this kind refused as a request: so is this
                return self._request_refused(request, retried, again=True)
            return retried
        try:  # free, or just handed to a waiter woken but not run yet: bounded all the same
            async with asyncio.timeout(self._left(started)):
                await self._lock.acquire()
        except TimeoutError:
            return self._still_repairing(request, attempt)
        self.gate.enter()
        self.cause = f"host.{code or 'refused'}" if not keys_refused else "keys.tmk-mismatch"
        self.state = State.RECOVERING
        caller = Caller()
        recovery = asyncio.ensure_future(
            self._recover(request, attempt, code, keys_refused, caller, started)
        )
        recovery.add_done_callback(self._ended)  # first: the caller resumes after it
        self._running = recovery
        try:
            try:
                return await patiently(recovery, self._left(started))
            except TimeoutError:
                if caller.retrying:  # the retry may be approved: its answer is the app's
                    return await asyncio.shield(recovery)
        except asyncio.CancelledError:  # the caller is stopped (the agent stops): so is it
            recovery.cancel()
            raise
        caller.gone = True  # the repair goes on without it
        recovery.add_done_callback(_logged)
        return self._still_repairing(request, attempt)

    def _ended(self, recovery: asyncio.Future[Attempt]) -> None:
        """A recovery ended (decided, failed or cancelled): the lock and the gate its caller
        took for it are free; one that ended without deciding leaves the terminal registered."""
        if self.state is State.RECOVERING:
            self.state = State.REGISTERED
        self.gate.leave()
        self._lock.release()

    def _left(self, started: float) -> float:
        """Seconds left of ``recovery.deadline`` since ``started``."""
        return max(self._settings().deadline - (time.monotonic() - started), 0.0)

    def _still_repairing(self, request: Message | None, attempt: Attempt) -> Attempt:
        """The caller's answer when ``recovery.deadline`` passed while a repair still ran:
        the refusal for a sign-in's; for a request, 96 and why (it was not sent again)."""
        if request is None:
            return attempt
        seconds = self._settings().deadline
        reason = (
            f"the host refused the request ({attempt.answer.text(39, '')}) and the repair "
            f"(sign-in, re-provisioning, master key) did not end within recovery.deadline "
            f"({seconds:g} s): not sent again; the repair goes on, try again in a moment"
        )
        self._event("deadline", code=attempt.answer.text(39, ""), seconds=seconds)
        return Attempt(local_answer(request, "96", "recovery.still-running", reason), None)

    async def _retry(self, request: Message, first: Attempt) -> Attempt:
        """``request`` sent again after the repair: with the field 59 its first try carried
        (section 4) and a new STAN; but a class never reversed (a refund, an advice, an EC
        upload) under the STAN of the try refused: its approval, should the refusal have been
        a stray (a 97 without a MAC) or that try booked after all, could not be undone, and
        under the same STAN the host tells a repeat (94, or its first answer) instead of
        booking it twice."""
        cls = classify(request)
        stan = ""
        answered = first.exchange.frame.message if first.exchange is not None else None
        # the host's answer to this request itself: not to the reversal that went before it
        itself = answered is not None and answered.mti == response_mti(request.mti)
        if cls is not None and cls.repeats_its_stan and answered is not None and itself:
            stan = answered.text(11, "")
        return await self.retry(request, first.field_59, wire_stan=stan)

    def _pin_again(self, request: Message, after: str) -> Attempt:
        """The answer to a request with a PIN block that a repair's sign-in would have it
        retried after: the block is encrypted under the PIN key the sign-in replaced, which the
        host no longer holds (it would decline the PIN, or count a wrong PIN against the card).
        Not sent again: 96, and the cardholder enters the PIN again."""
        self._event("not-retried", after=after, why="the request carries a PIN block")
        reason = (
            f"signed in again ({after}) after the host refused the request "
            f"({request.mti}): its PIN block is under the PIN key that sign-in replaced; "
            "not sent again: enter the PIN again"
        )
        return Attempt(local_answer(request, "96", "recovery.pin-again", reason), None)

    def busy(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.gate.busy()

    async def settled(self) -> bool:
        """Whether no recovery (nor the start-up sign-in) runs any more, waiting for it
        ``recovery.deadline`` at most."""
        return await self.gate.settled()

    async def _recover(
        self,
        request: Message | None,
        attempt: Attempt,
        code: str,
        keys_refused: bool,
        caller: Caller,
        started: float,
    ) -> Attempt:
        if not keys_refused:  # the host approved: there is no refusal to tell of
            on_97 = {**self.remedies.identity(), "response_code": code, "stage": "received"}
            self.remedies.tell_hooks("on-97", on_97)
        report = await self.remedies.self_check()
        self._event(
            "self-check",
            duration_ms=report.duration_ms,
            results=[f"{c.id} {c.status.value}: {c.summary.en}" for c in report.checks],
            check_ms={c.id: c.duration_ms for c in report.checks},
        )
        self._keys_refused = keys_refused
        # under a host-side incident, the acquirer's fault: no repair of ours, few sign-ins
        plan = self._incident_plan() if self.incident.is_open else await self._plan(report, code)
        refused_by = attempt.exchange.endpoint if attempt.exchange is not None else ""
        if plan and refused_by and refused_by != self.remedies.signed_in_at():
            # a host the terminal has not signed in at (a failover moved it there) refuses:
            # the session is the first suspect (DESIGN.md section 7)
            plan = ["sign-in", *(p for p in plan if p != "sign-in")]
        self._event("plan", remedies=plan or ["escalate"], refused_by=refused_by,
                    incident=self.incident.source or None)  # fmt: skip
        self._host_silent = ""
        self._not_retried = False
        self._signed_in = False
        self._signin_refusals = []
        self._tried = []
        self._tmk_failed = ""
        final = attempt
        if plan:
            final = await self._retry_with_remedies(request, attempt, plan, report, caller, started)
        # an approved sign-in whose keys the module refused is a refusal until a remedy helps
        still_refused = refused(final.answer) or (
            request is None and keys_refused and not self._signed_in
        )
        if self._reversals_refusal(request, final):
            # the reversal that goes first is refused, not the terminal (the host approved a
            # sign-in), nor the request (never sent): its tries are counted, and past
            # reversal.attempts sales go on without it
            self.state = State.REGISTERED
            assert request is not None and final.exchange is not None
            refused_with = final.exchange.frame.message.text(39, "")
            self._event("reversal-refused", code=refused_with)
            reason = (
                f"the host refuses with {refused_with} the reversal that goes before this request, "
                "although it approved a sign-in: the request was not sent"
            )
            final = Attempt(local_answer(request, "96", "reversal.refused", reason), None)
        elif self._requests_refusal(request, final):
            self.state = State.REGISTERED
            assert request is not None
            final = self._request_refused(request, final)
        elif still_refused and self.incident.is_open and not self._terminals_refusal(request, code):
            # a host-side incident, and no refusal that is the terminal's (its one sign-in of
            # the period tried already, approved, or refused for the host's own fault): the
            # acquirer's, nothing on the terminal to repair, and no reason to hold sales
            self.state = State.REGISTERED
            self._event("inconclusive", code=final.answer.text(39), why=incidents.CAUSE)
            if request is not None:
                answer = Message(final.answer.mti, dict(final.answer.fields))
                told = f"{incidents.REASON.en}; {incidents.NOTHING_TO_DO.en}"
                answer.fields[63] = agent_reason(incidents.CAUSE, told)
                final = Attempt(answer, final.exchange, final.transaction, final.field_59)
        elif (
            still_refused
            and self._signin_refusals
            and not self._signed_in
            and not self._terminals_refusal(request, code)
        ):
            # the sign-in itself was refused, but not with a code about the terminal (96,
            # a system fault): nobody's refusal yet, the terminal keeps its state
            self.state = State.REGISTERED
            refusals = ", ".join(self._signin_refusals)
            self._event("inconclusive", code=final.answer.text(39), why=f"sign-in {refusals}")
            if request is None:  # a refused sign-in's own recovery: not again for a while
                self._signin_refused_lately = (code, time.monotonic())
            if request is not None:
                reason = (
                    f"the host refused the sign-in with {refusals}, not a refusal of the "
                    "terminal: the request was not approved; try it again"
                )
                final = Attempt(local_answer(request, "96", "host.signin-failed", reason), None)
        elif still_refused and self._host_silent:
            # nobody's refusal yet: a host that did not answer is a communication failure, and
            # never makes the terminal unregistered
            self.state = State.REGISTERED
            self._event("inconclusive", code=final.answer.text(39), why=self._host_silent)
            if request is not None:
                reason = f"the host did not answer the repair: {self._host_silent}"
                final = Attempt(local_answer(request, "96", "host.no-answer", reason), None)
        elif still_refused:
            await self._enter_unregistered(report, final.answer)
        elif self._not_retried:
            # signed in, the request not sent again (its PIN block was stale): no recovery
            # yet, its next refusal is judged as the retry's would have been
            self.state = State.REGISTERED
        elif request is not None and final.exchange is None and not caller.gone:
            # the retry got no answer of the host's (timed out: a reversal is queued; or the
            # agent's own 96): a communication failure, not a recovery
            self.state = State.REGISTERED
            self._event("inconclusive", code=final.answer.text(39), why="the retry got no answer")
        else:
            self.state = State.REGISTERED
            self.counts["recoveries"] += 1
            self._event(
                "recovered",
                code=final.answer.text(39),
                seconds=round(time.monotonic() - started, 3),
                remedies=self._tried,
            )
        return final

    async def _retry_with_remedies(
        self,
        request: Message | None,
        attempt: Attempt,
        plan: list[str],
        report: Report,
        caller: Caller,
        started: float,
    ) -> Attempt:
        remaining = list(plan)
        last = attempt
        tried = self._tried

        async def next_try() -> Attempt:
            nonlocal last
            while remaining:
                remedy = remaining.pop(0)
                tried.append(remedy)
                if await self._apply(remedy, report):
                    break
                if self._keys_refused and "tmk-download" not in tried + remaining:
                    # the module refused the keys of an approved sign-in: its master key is
                    # not the host's; a download, where one is offered, goes first
                    again = await self._plan(report, attempt.answer.text(39, ""))
                    if "tmk-download" in again:
                        remaining[:0] = [r for r in again if r not in tried]
                        remaining[:] = list(dict.fromkeys(remaining))
            else:
                raise NothingLeftToTry
            if request is None or caller.gone:
                # every remedy ends in a sign-in, and that one succeeded (a request its caller
                # no longer waits for is not sent again: the app was answered)
                last = Attempt(Message(attempt.answer.mti, {39: "00"}), None)
                return last
            if carries_pin(request):
                self._not_retried = True
                self._not_retried_kind = (self._kind(request, attempt), time.monotonic())
                last = self._pin_again(request, remedy)
                return last
            caller.retrying = True
            try:
                last = await self._retry(request, attempt)
            finally:
                caller.retrying = False
            self._event("retried", after=remedy, code=last.answer.text(39))
            return last

        def go_on(tried: Attempt) -> bool:
            # refused again although a sign-in was approved: this request is refused, not the
            # terminal; no more remedies (re-provisioning would not change it)
            return (
                refused(tried.answer)
                and not self._requests_refusal(request, tried)
                and not self._reversals_refusal(request, tried)
            )

        try:
            return await tries(self._settings().attempts, self._left(started), go_on)(next_try)
        except NothingLeftToTry:
            return last

    async def _apply(self, remedy: str, report: Report) -> bool:
        clock = report.get("clock")
        actions: dict[str, Callable[[], Awaitable[str]]] = {
            "sign-in": self.remedies.sign_in,
            "provision": lambda: self.remedies.provision("the host refused the terminal"),
            "sync-clock": lambda: self.remedies.sync_clock(clock.data if clock else {}),
            "fail-over": self.remedies.fail_over,
            "tmk-download": self.remedies.download_tmk,
        }
        try:
            done = await actions[remedy]()
        except RemedyFailed as exc:
            if isinstance(exc, HostSilent):
                self._host_silent = str(exc)
            if isinstance(exc, SignInRefused):
                self._signin_refusals.append(exc.code)
            if isinstance(exc, KeysRefused):
                self._keys_refused = True
            if remedy == "tmk-download":
                self._tmk_failed = str(exc)
            self._event("remedy", remedy=remedy, ok=False, detail=str(exc))
            return False
        self._event("remedy", remedy=remedy, ok=True, detail=done)
        self._signed_in = True  # every remedy ends in a sign-in the host approved
        return True

    def sign_in_limited(self) -> tuple[str, str, str] | None:
        """None when a sign-in may go to the host now (counted): under a host-side incident at
        most one per ``recovery.incident_signin_every`` (DESIGN.md section 7, the app's own
        sign-ins included). Else the local answer to it: (code, finding, reason), the
        terminal's hold when it is unregistered."""
        if not self.incident.is_open:
            return None
        if self._incident_wait() > 0:
            return self.hold() or ("96", incidents.CAUSE, INCIDENT_SIGN_INS)
        self._incident_signed_in = time.monotonic()
        return None

    def _incident_wait(self) -> float:
        """Seconds until a sign-in is allowed again under an incident (0: now)."""
        last = self._incident_signed_in
        if last is None:
            return 0.0
        return max(0.0, last + self._settings().incident_signin_every - time.monotonic())

    def _incident_plan(self) -> list[str]:
        """Under an incident: a sign-in if none was tried within the period; never a
        re-provisioning or a download (nothing on the terminal is wrong)."""
        if self._incident_wait() > 0:
            return []
        self._incident_signed_in = time.monotonic()
        return ["sign-in"]

    async def _plan(self, report: Report, code: str) -> list[str]:
        """The policy's remedies; whether a master-key download may run is asked only when
        one would repair something."""
        keys = report.get("keys")
        wanted = self._keys_refused or (keys is not None and keys.finding in TMK_DOWNLOAD_REPAIRS)
        offered = wanted and await self.remedies.tmk_download_due()
        return decide(report, code, keys_refused=self._keys_refused, tmk_download=offered)

    # ------------------------------------------------------------------ whose refusal

    def _approved(self, request: Message) -> None:
        """An approval: no kind of request is refused any more; and once a request of the
        kind last refused is approved (the TUSN reported), its next refusal is looked into
        again rather than taken for the same."""
        self._refused_classes.clear()
        cls = classify(request)
        if cls is not None and cls.held:
            self._working[cls.name] = time.monotonic()
        if self._same_refusal is not None and self._same_refusal[0][0] == (
            cls.name if cls else request.mti
        ):
            self._same_refusal = None

    def _terminals_refusal(self, request: Message | None, code: str) -> bool:
        """Whether this recovery met a refusal that can only be the terminal's: the module
        refusing the keys of an approved sign-in, a sign-in refused with a terminal-config code,
        or (for a refused sign-in's own recovery, ``request`` None) the refusal it began with."""
        codes_met = [*self._signin_refusals, code] if request is None else self._signin_refusals
        return self._keys_refused or any(_terminal_config(met) for met in codes_met)

    def _reversals_refusal(self, request: Message | None, attempt: Attempt) -> bool:
        """Whether ``attempt`` is the refusal of the reversal that went before ``request``
        (its exchange answers a 0400, not the request), after a sign-in this recovery got
        approved."""
        if request is None or not self._signed_in or attempt.exchange is None:
            return False
        return attempt.exchange.frame.message.mti == "0410" and request.mti != "0400"

    def _requests_refusal(
        self, request: Message | None, attempt: Attempt, signed_in: bool = False
    ) -> bool:
        """Whether ``attempt`` is a refusal of this request, not of the terminal: a sign-in of
        this recovery was approved, the host still refuses the request (whatever the code,
        DESIGN.md section 7), and not every kind of request is refused (that is: two kinds
        refused with one code since the last approval, one without A2, one of them a purchase,
        and none approved still working).
        Never under a host-side incident: a host that approves a sign-in and refuses the rest
        is the acquirer's fault the fleet announced (DESIGN.md section 7). ``signed_in``: a
        sign-in was approved before this refusal, outside the running recovery."""
        if request is None or not (self._signed_in or signed_in) or attempt.exchange is None:
            return False
        if self.incident.is_open or not refused(attempt.answer):
            return False
        cls = classify(request)
        refused_classes = dict(self._refused_classes)
        if cls is not None:
            refused_classes[cls.name] = (cls.needs_tusn, attempt.answer.text(39, ""))
        # field 59 explains refusals of classes that carry A2; two kinds refused with one code,
        # one of them without A2, and none still working, is the host refusing the terminal
        # whatever it sends ("every message class", DESIGN.md section 7). Kinds refused with
        # different codes are refused for different reasons: each its own (a sale's TUSN
        # refused 97 and an inquiry not permitted, 58); a kind refused otherwise before does
        # not hide two refused alike since
        lately = time.monotonic() - SAME_REFUSAL_MEMORY
        working = [kind for kind, at in self._working.items() if at >= lately]
        if cls is not None and cls.name in working:
            working.remove(cls.name)  # refused now, after a sign-in
        # and the purchase among them, the kind every terminal sends: refunds and
        # pre-authorisations a merchant is not enabled for (58) on a quiet morning are not
        # the whole terminal refused
        by_code: dict[str, dict[str, bool]] = {}
        for kind, (a2, refused_with) in refused_classes.items():
            by_code.setdefault(refused_with, {})[kind] = a2
        every_kind = any(
            len(kinds) >= 2 and not all(kinds.values()) and PURCHASE in kinds
            for kinds in by_code.values()
        )
        return not (every_kind and not working)

    def _kind(self, request: Message, attempt: Attempt) -> tuple[str, str, str]:
        cls = classify(request)
        a2 = attempt.a2.status.value if attempt.a2 is not None else ""
        return (cls.name if cls else request.mti, attempt.answer.text(39, ""), a2)

    def _refused_again_after_signin(self, request: Message, attempt: Attempt) -> bool:
        """A refusal of the kind of a PIN request not sent again after an approved sign-in:
        what its retry would have met, so judged as that: the request's refusal unless every
        kind is refused (then a recovery as for any refusal). Without it each PIN sale refused
        so cost a sign-in, and the cardholder entered the PIN again each time."""
        if not self._remembered(self._not_retried_kind, request, attempt):
            return False
        self._not_retried_kind = None  # judged once: the request's from now on, or recovered
        return self._requests_refusal(request, attempt, signed_in=True)

    def _known_request_refusal(self, request: Message, attempt: Attempt) -> bool:
        """A refusal of the very kind just attributed to its request, with no sign-in since:
        that request's too, at once (no sign-in per refused sale)."""
        return self._remembered(self._same_refusal, request, attempt)

    def _remembered(
        self, memory: tuple[tuple[str, str, str], float] | None, request: Message, attempt: Attempt
    ) -> bool:
        """Whether ``memory`` (a kind of refusal, and when) is this refusal's kind, lately, the
        terminal registered and no host-side incident open."""
        if memory is None or self.state is not State.REGISTERED or self.incident.is_open:
            return False
        kind, at = memory
        fresh = time.monotonic() - at < SAME_REFUSAL_MEMORY
        return fresh and kind == self._kind(request, attempt)

    def _request_refused(self, request: Message, attempt: Attempt, again: bool = False) -> Attempt:
        """The host refuses this request, not the terminal: it stays registered, the app gets
        the host's code with the cause in field 63, and the journal, telemetry, hooks and
        ``agent status`` hear of it with its finding."""
        code = attempt.answer.text(39, "")
        cls = classify(request)
        found = finding(attempt.a2)
        told = advice(attempt.a2, code, codes.lookup(code))
        if cls is not None:
            self._refused_classes[cls.name] = (cls.needs_tusn, code)
            self._working.pop(cls.name, None)
        self._same_refusal = (self._kind(request, attempt), time.monotonic())
        detail: dict[str, Any] = {
            "finding": found,
            "code": code,
            "class": cls.name if cls else request.mti,
            "tusn": attempt.a2.tusn if attempt.a2 is not None else "",
            "a2": attempt.a2.status.value if attempt.a2 is not None else "",
            "repeated": again,
        }
        self.refused_requests.add(found, {**detail, "message": told.to_json(), "at": time.time()})
        self.journal.note("request-refused", **detail, message_en=told.en, message_zh=told.zh)
        log.warning("request refused, terminal still registered: %s: %s", found, told.en)
        payload = {**self.remedies.identity(), **detail, "message": told.to_json()}
        self.remedies.tell_hooks("request-refused", payload)
        self.remedies.tell_hooks("display-message", payload)
        answer = Message(attempt.answer.mti, dict(attempt.answer.fields))
        answer.fields[63] = agent_reason(found, told.en)
        return Attempt(answer, attempt.exchange, attempt.transaction, attempt.field_59)

    async def _enter_unregistered(self, report: Report, answer: Message) -> None:
        blocking = [c for c in report.checks if c.finding in PERSON_MUST_ACT]
        action = None
        code = answer.text(39)
        if blocking:
            reason, action = blocking[0].summary, blocking[0].remedy
            cause = f"{blocking[0].id}.{blocking[0].finding}"
        elif self._keys_refused:
            reason, action, cause = KEYS_REFUSED, LOAD_TMK, "keys.tmk-mismatch"
        else:
            cause = f"host.{code}-after-signin"
            reason = messages.message(cause, code=code, meaning=codes.lookup(code))
        if self._tmk_failed and cause in ("keys.tmk-absent", "keys.tmk-mismatch"):
            # what the check said would be done was tried and failed: say so, and what then
            action = messages.remedy("keys.tmk-absent:download-failed", reason=self._tmk_failed)
        self._own = (cause, reason, action)
        self._working.clear()  # what worked before says nothing once the terminal is refused
        self.state = State.UNREGISTERED
        self._tell_unregistered()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_until_registered())

    def _why_unregistered(self) -> tuple[str, Text, Text | None]:
        """What the merchant is told: the acquirer's fault while a host-side incident is open
        (DESIGN.md section 7), else the terminal's own cause (kept for when it closes)."""
        if self.incident.is_open:
            return incidents.CAUSE, incidents.REASON, incidents.NOTHING_TO_DO
        assert self._own is not None
        return self._own

    def _tell_unregistered(self, retold: bool = False) -> None:
        """Why the terminal is unregistered and what to do, to the journal, the log, the
        hooks, ``agent status`` and the fleet; ``retold``: it was unregistered already, the
        cause changed (the fleet sees that in the state, not as a terminal newly refused)."""
        cause, reason, action = self._why_unregistered()
        self.cause = cause
        self.message = unregistered_message(self.remedies.identity(), reason, action)
        retold_detail = {"retold": True} if retold else {}
        self._event("unregistered", cause=cause, message_en=self.message.en,
                    message_zh=self.message.zh, **retold_detail)  # fmt: skip
        log.error("%s", self.message.en)
        payload = {**self.remedies.identity(), "message": self.message.to_json()}
        self.remedies.tell_hooks("on-unregistered", payload)
        self.remedies.tell_hooks("display-message", payload)

    async def _probe_until_registered(self) -> None:
        settings = self._settings()
        backoff = Backoff(settings.probe_first, settings.probe_max)
        pause = backoff.failed()
        while self.state is State.UNREGISTERED:
            self._retell()
            if self.incident.is_open:  # the host's fault: at most one sign-in per period
                pause = max(pause, self._probe_incident_wait())
            # an incident that opens or closes meanwhile is looked at at once: its end (the
            # acquirer repaired) ends a wait of up to recovery.incident_signin_every
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self.incident.changed()
            if self.state is not State.UNREGISTERED:
                return  # registered meanwhile: no sign-in more
            self._retell()
            if self.incident.is_open:
                if self._probe_incident_wait() > 0:
                    continue
                self._incident_signed_in = time.monotonic()
            try:
                await self._probe_once()
            except RemedyFailed as exc:
                if isinstance(exc, SignInRefused):
                    self._refused(exc.code, "0810")
                pause = backoff.failed()
                log.info("still unregistered: %s; next probe in %.0f s", exc, pause)
                continue
            except Exception:  # the probe must outlive a bug: it is the way back to sales
                pause = backoff.failed()
                log.exception("the sign-in probe failed unexpectedly; next probe in %.0f s", pause)
                continue
            self.registered_again("the background sign-in probe succeeded")

    def _probe_incident_wait(self) -> float:
        """Seconds the probe waits under an incident: for the period since the last sign-in,
        and for its first sign-in under a newly announced one, a point of the period of this
        terminal's own, not the moment the acquirer's whole fleet hears of it, so that their
        refusals keep coming spread over it (the watcher closes an incident quiet for
        ``fleet.incident_window``). Sign-ins of others (the app's) are not held by it."""
        if self._probe_spread_for != self.incident.opened_at:
            self._probe_spread_for = self.incident.opened_at
            every = self._settings().incident_signin_every
            self._probe_not_before = time.monotonic() + random.uniform(0, every)
        return max(self._incident_wait(), self._probe_not_before - time.monotonic())

    def _retell(self) -> None:
        """An incident announced (or ended) since the merchant was told: the acquirer's fault
        now (DESIGN.md section 7), or again the terminal's own cause."""
        if self.cause != self._why_unregistered()[0]:
            self._tell_unregistered(retold=True)

    async def _probe_once(self) -> None:
        """A sign-in; for a module whose master key is not the host's (or absent), the
        master-key download first once ``keys.tmk_download_every`` has passed since the last
        (DESIGN.md section 18: a failure there is tried again, not left to a technician)."""
        tmk = self._own is not None and self._own[0] in ("keys.tmk-mismatch", "keys.tmk-absent")
        if tmk and not self.incident.is_open and await self.remedies.tmk_download_due():
            self._event("remedy", remedy="tmk-download", ok=True,
                        detail=await self.remedies.download_tmk())  # fmt: skip
            return
        await self.remedies.sign_in()

    async def sign_in(self, why: str, *, within_incident: bool = False) -> str:
        """A sign-in asked for outside a recovery (a technician's ``agent signin``, the light
        check finding stale keys, the host's requirement 3): one that succeeds registers the
        terminal again; one refused as the terminal's, or whose keys the module refuses, is
        recovered from (:meth:`after_sign_in_failed`). ``within_incident``: under a host-side
        incident at most one per ``recovery.incident_signin_every``, as a recovery's (a
        technician's is a person's)."""
        if within_incident and self.sign_in_limited() is not None:
            raise RemedyFailed(INCIDENT_SIGN_INS)
        try:
            done = await self.remedies.sign_in()
        except RemedyFailed as exc:
            final = await self.after_sign_in_failed(exc)
            if final is None or not codes.approved(final.text(39, "")):
                raise
            return f"{exc}; recovery repaired it and signed in"
        self.registered_again(why)
        return done

    def signed_in(self) -> None:
        """A sign-in succeeded, whoever asked for it (DESIGN.md section 7: unregistered "until
        a sign-in succeeds"). Told a moment later: a caller of its own (the probe, a
        technician's sign-in) says why first."""
        self._signin_refused_lately = None
        asyncio.get_running_loop().call_soon(self.registered_again, "a sign-in succeeded")

    def registered_again(self, why: str) -> None:
        """A sign-in succeeded (the probe, or a technician's ``agent signin``): the probe
        stops, not one sign-in more."""
        if self.state is State.UNREGISTERED:
            self.state = State.REGISTERED
            self.message = None
            probe = self._probe
            if probe is not None and probe is not asyncio.current_task():
                probe.cancel()
            self.counts["recoveries"] += 1
            self._event("registered-again", why=why)
            log.warning("registered again: %s", why)

    # ------------------------------------------------------------------------ background

    async def close(self) -> None:
        tasks = [t for t in (self._probe, self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _refused(self, code: str, mti: str) -> None:
        """A host's refusal, told: the last one in the status, a 97 counted and, in the
        journal's event, told the fleet (DESIGN.md section 14: an incident stays open while
        its terminals' sign-ins are still refused 97)."""
        self.last_refusal = {"code": code, "mti": mti, "at": time.time()}
        if code == "97":
            self.counts["97"] += 1
        self._event("refused", code=code, text=codes.lookup(code).en)

    def _event(self, kind: str, **detail: Any) -> None:
        self.journal.note(f"recovery.{kind}", **detail)  # the recovery never waits for it


def _logged(recovery: asyncio.Future[Attempt]) -> None:
    """A recovery whose caller no longer waits: its failure is logged, not lost."""
    if not recovery.cancelled() and (failure := recovery.exception()) is not None:
        log.error("a recovery that outlasted recovery.deadline failed: %s", failure,
                  exc_info=failure)  # fmt: skip


INCIDENT_SIGN_INS = (
    "a host-side incident is open: the agent signs in at most once per "
    "recovery.incident_signin_every, and nothing on the terminal needs doing"
)


def _terminal_config(code: str) -> bool:
    """Whether a refusal's ``code`` is about the terminal's registration (97, 03, 58...)."""
    return codes.is_code(code) and codes.lookup(code).category is codes.Category.TERMINAL_CONFIG


class AskedByTheHost:
    """The remedies the host's processing requirements call for (3 a sign-in, 6 a
    re-provisioning), as recovery allows them: under a host-side incident at most one sign-in
    per ``recovery.incident_signin_every`` and no re-provisioning (DESIGN.md section 7)."""

    def __init__(self, recovery: Recovery) -> None:
        self._recovery = recovery

    async def sign_in(self) -> str:
        return await self._recovery.sign_in("the host asked for a sign-in", within_incident=True)

    async def provision(self, reason: str) -> str:
        if self._recovery.incident.is_open:
            raise RemedyFailed("a host-side incident is open: the agent does not re-provision")
        return await self._recovery.remedies.provision(reason)
