"""One try of a request in wrap mode: the agent's STAN, the TID/MID and batch in effect, the MAC
through the card module, the journal row written before the first byte leaves, the host's answer
with its MAC checked, and the app's STAN back. Recovery retries through :meth:`Sender.attempt`
too: a retry is a new transaction.

When the agent answers by itself, the response carries field 39 and, in field 63, ``AGENT`` and
the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent import stages
from agent.blocking import Gate, Workers, patiently
from agent.config import Config
from agent.host.link import Exchange, HostLink, HostLinkError, HostUnavailable
from agent.host.signin import SignInResult, sign_in
from agent.journal import SALE_PATIENCE, Journal, JournalError, Rendered
from agent.keys.family import RULES
from agent.keys.tmk_download import TagLoader
from agent.recovery.policy import refused
from agent.registration.a2 import Outgoing59, TusnSource
from agent.registration.location import Location
from agent.registration.refusals import A2Sent
from agent.transaction.classes import MessageClass, classify
from agent.transaction.deferred import DeferredWrites
from agent.transaction.macs import Macs
from agent.transaction.reversals import ReversalPending, ReversalRefused, ReversalSender
from agent.transaction.stan_map import LocalAnswer, StanMap
from agent.transaction.stats import GatewayStats
from agent.wire import codes, field59
from agent.wire.builders import MAC_PLACEHOLDER, Terminal, response_to, with_batch
from agent.wire.errors import DecodeError, WireError
from agent.wire.message import Message, encode_message
from agent.wire.profile import Profile
from drivers.module import KeyFamily, ModuleError, ModuleStatusError, Status

log = logging.getLogger(__name__)

# Threads for the requests' blocking steps (at most one per request at a time); more requests
# than this at once queue for a thread, and with the disk frozen those wait out their patience.
WORKERS = 8

# The findings of a module that refuses a request's MAC, by its status; any other failure is
# module.mac-failed.
MODULE_REFUSALS = {
    Status.KEY_ABSENT: "keys.keys-absent",  # no working MAC key: never signed in, or erased
    Status.TAMPERED: "module.tampered",
}


# What a request's recording step may wait for (:class:`Waiting`): the finding and what the app
# is told when it outlasts the sale's patience
WORKER = ("gateway.workers-busy", "a worker thread (each busy with an earlier request, held up "
          "by the journal's disk or the card module)")  # fmt: skip
MODULE_TUSN = ("module.slow", "the card module (field 59's TUSN)")
JOURNAL = ("storage.journal-slow", "the journal (its disk may be frozen or failing)")
MODULE_MAC = ("module.slow", "the card module (its MAC)")
MODULE_CHECK = ("module.slow", "the card module (the answer's MAC check)")


class Waiting:
    """What a request's recording step (or its answer's closing) waits for now, set on its
    worker thread and read on the event loop when it outlasts the sale's patience: the app is
    told which device it was."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = WORKER


@dataclass(frozen=True)
class Attempt:
    """What one try of a request gave the app; ``exchange`` is the host's response when the
    answer is the host's, ``None`` when the agent answered itself. ``transaction`` is the
    journal row of a reversible request the host answered: if the app does not get an
    approval of it, that row is reversed."""

    answer: Message
    exchange: Exchange | None
    transaction: int | None = None
    # field 59 as it went to the host, for a class that carries A2 (DESIGN.md section 17): a
    # retry after recovery carries it unchanged
    field_59: Outgoing59 | None = None
    # ``answer`` encoded under that profile, made while the module checked the host's MAC (None
    # when it could not be: the app's side encodes it and says why)
    for_app: tuple[Profile, bytes] | None = field(default=None, repr=False)  # card data inside

    @property
    def a2(self) -> A2Sent | None:
        return self.field_59.a2 if self.field_59 is not None else None


REASON_FIELD = 63
AGENT_PREFIX = "AGENT "  # how field 63 begins when the words are the agent's, not the host's


def agent_reason(finding: str, text: str) -> str:
    """Field 63 of an answer the agent words (DESIGN.md section 4): ``AGENT``, the finding code
    (``agent explain`` knows it), and the English text, in printable ASCII (anything else, say
    from an exception's text, escaped) and clipped to the field's 163 characters."""
    shown = "".join(
        c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii") for c in text
    )
    return f"{AGENT_PREFIX}{finding}: {shown}"[:163]


def local_answer(request: Message, code: str, finding: str, reason: str) -> Message:
    """The agent's own answer to ``request``: ``code`` in 39, ``finding`` and ``reason`` in
    63."""
    try:
        response = response_to(request, code)
    except ValueError:  # no request (a response MTI, an unknown one): answered with its MTI
        response = Message(request.mti, {11: request.fields[11]} if 11 in request else {})
        response.fields[39] = code
    response.fields.pop(64, None)
    response.fields[REASON_FIELD] = agent_reason(finding, reason)
    return response


def fitted(answer: Message, profile: Profile) -> Message:
    """``answer`` as ``profile`` can carry it when field 63 holds the agent's own words
    (:func:`agent_reason`): clipped to the profile's maximum for 63 (an acquirer's may be below
    the CUP 163), or left out where the profile has no field 63; any other answer unchanged."""
    reason = answer.get(REASON_FIELD)
    if not (isinstance(reason, str) and reason.startswith(AGENT_PREFIX)):
        return answer
    row = profile.fields.get(REASON_FIELD)
    if row is not None and len(reason) <= row.max_len:
        return answer
    fields = dict(answer.fields)
    if row is None:
        del fields[REASON_FIELD]
    else:
        fields[REASON_FIELD] = reason[: row.max_len]
    return Message(answer.mti, fields, answer.wire)


def encode_local(answer: Message, profile: Profile) -> bytes:
    """An answer the agent made, encoded under the app's ``profile`` (:func:`fitted`); under
    the CUP defaults when even so the profile cannot carry it."""
    try:
        return encode_message(fitted(answer, profile), profile)
    except WireError:
        return encode_message(answer)


def unreadable_answer(message: bytes, reason: str) -> Message:
    """The answer to a message that does not decode (from its MTI on): 30 with the reason, under
    the response MTI when it begins with a request MTI (the app must always get an answer), else
    as a network-management answer."""
    mti = message[:2].hex() if len(message) >= 2 else ""
    if not (mti.isdigit() and mti[2] in "02468"):
        mti = "0800"  # no request MTI to answer: a network-management answer with the reason
    return local_answer(Message(mti, {}), "30", "request.format", reason)


def _for_the_app(request: Message, response: Message) -> Message:
    """The host's answer as the app gets it: MAC removed (verified here; the app has no key),
    the app's STAN back."""
    answer = Message(response.mti, dict(response.fields), response.wire)
    answer.fields.pop(64, None)
    if 11 in request:
        answer.fields[11] = request.fields[11]
    else:
        answer.fields.pop(11, None)
    return answer


def sm4_pin_into_62(outgoing: Message) -> None:
    """Move the SM4 PIN block (59 usage A1) into field 62, for an acquirer that carries it there
    (``wire.sm_pin_field = "62"``, DESIGN.md section 4); 59 goes when nothing else is left in it.
    A 59 that is not usages, or a request that has its own 62, goes out as the app sent it."""
    raw = outgoing.get(field59.FIELD)
    if raw is None:
        return
    try:
        value = field59.field_bytes(raw)
        pin = field59.find_usage(value, field59.SM4_PIN_BLOCK)
    except DecodeError:
        return
    if pin is None:
        return
    if 62 in outgoing:
        log.warning("the request has its own field 62: its SM4 PIN block stays in 59 A1")
        return
    rest = field59.without_pin(value)
    if rest is None:
        del outgoing.fields[field59.FIELD]
    else:  # as the app sent it: bytes, or text under a profile that makes 59 text
        outgoing.fields[field59.FIELD] = rest if isinstance(raw, bytes) else rest.decode("ascii")
    outgoing.fields[62] = pin
    outgoing.fields = dict(sorted(outgoing.fields.items()))


def unclassified(request: Message) -> str:
    """Why ``request`` fits no message class, for the local 30."""
    facts = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("processing code", request.get(3)),
            ("25", request.get(25)),
            ("60.1", str(request.get(60) or "")[:2] or None),
            ("60.3", str(request.get(60) or "")[8:11] or None),
        )
        if value
    )
    return f"MTI {request.mti} ({facts or 'no 3, 25 or 60'}) fits no message class; not sent"


class Sender:
    def __init__(
        self,
        config: Callable[[], Config],
        journal: Journal,
        link: HostLink,
        macs: Macs,
        reversals: ReversalSender,
        stan_map: StanMap,
        stats: GatewayStats,
        deferred: DeferredWrites,
        tusn: TusnSource,
        location: Location,
        workers: Workers,
        tell_hooks: Callable[[str, dict[str, Any]], None],
        tag_loader: Callable[[], TagLoader | None],
    ) -> None:
        """``config`` is read at each use: a reload may change TID, MID, scheme or slot.
        ``tusn`` and ``location`` fill field 59 (A2, A5) of the classes that carry it.
        ``workers`` run each request's two blocking steps (journal and MAC, before it leaves and
        once answered). ``tell_hooks`` tells the ``signed-in`` hooks of every sign-in, whoever
        asked for it (the start, recovery, a technician, the app). ``tag_loader`` says what
        every sign-in does with a master key its 0810 brings as tag 00 (DESIGN.md section
        18), asked at each sign-in."""
        self._config = config
        self._tag_loader = tag_loader
        self._workers = workers
        self._tell_hooks = tell_hooks
        # told of every sign-in that succeeds, whoever asked for it (the app, the host's
        # requirement, a remedy): recovery's, which ends the unregistered state
        self.on_signed_in: Callable[[], None] | None = None
        self.tusn = tusn
        self.location = location
        self.journal = journal
        self.stan_map = stan_map
        self.link = link
        self.macs = macs
        self.reversals = reversals
        self.stats = stats
        self._signin_lock = asyncio.Lock()
        # outcomes the journal could not take (a full disk), written once it can
        self.deferred = deferred
        # the last successful sign-in since the service started
        self.last_signin: SignInResult | None = None
        self._signins_running = 0
        # Cleared while a sign-in replaces the working keys: requests wait rather than go out
        # MACed under keys the host is about to forget.
        self._keys_settled = asyncio.Event()
        self._keys_settled.set()
        # Requests under way with the keys in the module now, from their MAC to the check of
        # their answer's: a sign-in waits for them (DESIGN.md section 10: an approval is checked
        # under the keys it was sent with), within their own patience (a silent host's, a hung
        # disk's).
        self._in_flight = Gate(lambda: self.link.options.response_timeout + 2 * SALE_PATIENCE)
        # closes that outlasted the app's patience (a frozen disk) of requests the host did not
        # answer, or answered while the app was told 96: the reversals they queue must go
        # before any financial request
        self._unclosed: set[asyncio.Future[object]] = set()

    @property
    def signed_in(self) -> bool:
        """Whether a sign-in succeeded since the service started."""
        return self.last_signin is not None

    @property
    def signed_in_at(self) -> str | None:
        """HOST:PORT of the host of the last successful sign-in since the service started."""
        return self.last_signin.endpoint if self.last_signin is not None else None

    @property
    def terminal(self) -> Terminal:
        terminal = self._config().terminal
        return Terminal(terminal.tid, terminal.mid)

    async def attempt(
        self, request: Message, field_59: Outgoing59 | None = None, *, wire_stan: str = ""
    ) -> Attempt:
        """Send ``request`` once, as a new transaction (new STAN, fresh MAC, the TID/MID
        configured now): what a retry after a remedy needs too, with ``field_59`` the field 59
        its first try went out with (DESIGN.md section 4: a retry carries it unchanged). Its
        class (DESIGN.md section 15) says whether it carries a MAC and is reversible; one that
        fits no class is answered with 30 and never sent. ``wire_stan``: the STAN it goes
        under instead of a new one (a repetition of a try the host may have taken)."""
        cls = classify(request)
        if cls is None:
            return self._locally(request, "30", "request.unclassified", unclassified(request))
        if len(self.deferred):  # outcomes a full or frozen disk could not take yet
            writing = asyncio.ensure_future(self.write_outcomes())
            try:
                await patiently(writing, SALE_PATIENCE)
            except TimeoutError:  # what waits for the journal goes on waiting; the sale cannot
                reason = (
                    "the journal did not take the outcomes waiting for it within "
                    f"{SALE_PATIENCE:g} s (its disk may be frozen or failing): not sent"
                )
                return self._locally(request, "96", "storage.journal-slow", reason)
        if not self.link.endpoints:
            reason = "no host configured (host.primary): the terminal waits for provisioning"
            return self._locally(request, "96", "provisioning.unprovisioned", reason)
        await self._keys_settled.wait()
        if cls.after_reversals and self._unclosed:
            reason = (
                "the journal has not yet recorded the outcome of an earlier request, whose "
                "reversal goes first (its disk may be frozen or failing): not sent"
            )
            return self._locally(request, "96", "storage.journal-slow", reason)
        if cls.after_reversals and self.journal.has_queued_reversals:
            try:
                await self.reversals.before_sale()
            except ReversalRefused as exc:
                # the host lost the session or the keys: recovery repairs, then retries the
                # request, and the reversal goes first again
                self.reversals.waiting.set()
                reason = f"{exc}; the request was not sent"
                answer = self.local(request, exc.answer.text(39), "reversal.refused", reason)
                return Attempt(answer, exc.exchange)
            except ReversalPending as exc:
                # A reversal goes before the next sale; one that failed reversal.attempts times
                # in a row no longer holds sales up (it is retried in the background): a
                # terminal is never locked out of sales by its own queue, nor of settling (a
                # stuck one may never close: a person sees to it, the fleet hears of it).
                if exc.attempts < self._config().reversal.attempts:
                    self.reversals.waiting.set()
                    return self._locally(request, "96", "reversal.pending", str(exc))
                log.warning("sale goes ahead of a reversal that keeps failing: %s", exc)
        try:
            references = await self.stan_map.references(request, cls)
        except JournalError as exc:
            reason = f"cannot look up the request it refers to: {exc}"
            return self._locally(request, "96", "storage.journal-unusable", reason)
        if isinstance(references, LocalAnswer):
            return self._locally(request, references.code, references.finding, references.reason)
        while not self._keys_settled.is_set():  # a sign-in began meanwhile: after it
            await self._keys_settled.wait()
        self._in_flight.enter()
        try:
            return await self._send(request, cls, references, field_59, wire_stan)
        finally:
            self._in_flight.leave()

    async def _send(
        self,
        request: Message,
        cls: MessageClass,
        references: dict[int, str],
        field_59: Outgoing59 | None,
        wire_stan: str,
    ) -> Attempt:
        """The request out (journalled, MACed) and its answer checked, under the working keys
        in the module now (in flight: a sign-in waits for it)."""
        financial = cls.reversible
        outgoing = self._prepare(request, cls, references)
        stages.mark("prepared")
        # the app's STAN of this request (a reversal's or batch upload's 11 names another one)
        own = isinstance(request.get(11), str) and not cls.refers_by_stan
        app_stan = request.text(11) if own else None
        location = self.location.a5() if cls.needs_tusn and field_59 is None else None
        waiting = Waiting()
        record = self._workers.run(
            self._record,
            request,
            outgoing,
            financial,
            app_stan,
            cls,
            location,
            field_59,
            wire_stan,
            waiting,
        )
        try:
            transaction, encoded, field_59 = await patiently(record, SALE_PATIENCE)
            stages.mark("recorded")
        except TimeoutError:
            record.add_done_callback(self._never_sent)
            finding, what = waiting.now
            reason = (
                f"the request was not ready to go within {SALE_PATIENCE:g} s, still waiting for "
                f"{what}: not sent"
            )
            return self._locally(request, "96", finding, reason)
        except ModuleError as exc:
            status = exc.status if isinstance(exc, ModuleStatusError) else None
            finding = MODULE_REFUSALS.get(status, "module.mac-failed")
            said = str(exc)
            reason = said if said.startswith("card module") else f"card module: {said}"
            return self._locally(request, "96", finding, reason)
        except JournalError as exc:
            return self._locally(request, "96", "storage.journal-unwritable", str(exc))
        except WireError as exc:
            return self._locally(request, "96", "request.not-encodable", str(exc))
        try:
            exchange = await self.link.request(outgoing, encoded)
        except HostUnavailable as exc:
            await self._close_unanswered(transaction, "not-sent", str(exc), None)
            return self._locally(request, "96", "network.host-unreachable", str(exc))
        except HostLinkError as exc:
            reason = "98" if financial else None
            await self._close_unanswered(transaction, "timed-out", str(exc), reason)
            if financial:
                self.reversals.waiting.set()
            told = f"{exc}; reversal queued" if financial else str(exc)
            return self._locally(request, "98", "host.no-answer", told)
        return await self._settle(request, outgoing, transaction, exchange, cls, field_59)

    async def write_outcomes(self) -> None:
        """What the journal could not take before, if it can now (reversals queued then)."""
        if await self.deferred.flush():
            self.reversals.waiting.set()

    async def _close_unanswered(
        self, transaction: int, state: str, detail: str, reversal_reason: str | None
    ) -> None:
        """Journal a request that got no answer. If even that fails (a full disk), the row stays
        pending on disk (a reversal if the agent stops now) and is closed, its reversal queued,
        as soon as the journal takes writes again: nothing is lost, the app is told."""

        def close() -> bool:
            self.journal.finish(transaction, state, detail=detail, reversal_reason=reversal_reason)
            return True

        what = f"the outcome of transaction {transaction} ({state})"
        closing = asyncio.ensure_future(self.deferred.now_or_later(what, close))
        try:
            closed = await patiently(closing, SALE_PATIENCE)
        except TimeoutError:  # a frozen disk: the app gets its answer, the write goes on
            log.error("the journal has not recorded %s within %g s; the app is answered, the "
                      "row is closed when the disk answers", what, SALE_PATIENCE)  # fmt: skip
            if reversal_reason is not None:  # the reversal it queues goes first, once queued
                self._unclosed.add(closing)
            closing.add_done_callback(lambda done: self._closed_late(done, transaction))
            return
        if closed:
            self.reversals.settled(transaction)

    def _closed_late(self, closing: asyncio.Future[bool | None], transaction: int) -> None:
        """The close of a request the host did not answer, which outlasted the app's patience,
        has ended: the reversal it queued may go now."""
        self._unclosed.discard(closing)
        if closing.cancelled():
            return
        failure = closing.exception()
        if failure is not None:
            log.error("closing transaction %s failed: %s", transaction, failure, exc_info=failure)
        elif closing.result():
            self.reversals.settled(transaction)
            self.reversals.waiting.set()

    def _never_sent(self, record: asyncio.Future[tuple[int, bytes, Outgoing59 | None]]) -> None:
        """A request recorded too late to be sent (answered 96 meanwhile) is closed as never
        sent once the journal has it."""
        if record.cancelled() or record.exception() is not None:
            return  # not recorded, or closed by _record itself
        transaction = record.result()[0]
        detail = "recorded too late; answered 96"
        self.journal.later(self.journal.finish, transaction, "not-sent", detail=detail)

    def _record(
        self,
        request: Message,
        outgoing: Message,
        financial: bool,
        app_stan: str | None,
        cls: MessageClass,
        location: bytes | None,
        field_59: Outgoing59 | None,
        wire_stan: str,
        waiting: Waiting,
    ) -> tuple[int, bytes, Outgoing59 | None]:
        """In a worker thread: field 59 of a class that carries A2 (``field_59``, a first try's,
        or built through the module), the request's STAN (``wire_stan``, or a new one; unless
        it names an earlier request's, as a reversal does), the request journalled as pending
        and, beside it, encoded with its MAC from the module (:meth:`Macs.encode_beside`: the
        disk and the module are different devices, and a terminal's module takes milliseconds
        a MAC on its serial line). One that cannot be encoded or MACed is not sent (closed as
        never sent if its row was written). ``waiting`` says what it waits for, for the app's
        answer if it outlasts the sale's patience."""
        stages.mark("worker")
        if cls.needs_tusn:
            waiting.now = MODULE_TUSN
            row = self._config().wire.profile.fields.get(59)
            room = row.max_len if row is not None else field59.MAX_BYTES
            field_59 = field_59 or self.tusn.outgoing(outgoing, location, room)
            if field_59.value is not None:
                text = row is not None and row.fmt != "b"  # an acquirer's profile made it text
                value = field_59.value
                outgoing.fields[59] = value.decode("ascii", "replace") if text else value
                outgoing.fields = dict(sorted(outgoing.fields.items()))
        if self._config().wire.sm_pin_field == "62":
            sm4_pin_into_62(outgoing)
        if not cls.refers_by_stan:
            waiting.now = JOURNAL
            outgoing.fields[11] = wire_stan or self.journal.take_stan()
        stages.mark("field-59")
        key = self.stan_map.key(request, self.terminal) if app_stan is not None else None

        def record(syncing: Callable[[], None]) -> int:
            waiting.now = JOURNAL
            try:
                transaction = self.journal.begin(outgoing, financial=financial,
                                                 app_stan=app_stan, replay_key=key,
                                                 syncing=syncing)  # fmt: skip
            finally:
                waiting.now = MODULE_MAC  # what is left: the module's answer (module first)
            stages.mark("pending-synced")  # before the module's answer is read, either order
            return transaction

        waiting.now = MODULE_MAC  # its command may go first, on a line other requests share
        transaction, encoded = self.macs.encode_beside(outgoing, record)
        if app_stan is not None:
            self.stan_map.recorded(app_stan)
        try:
            frame = encoded()
            stages.mark("mac")
            return transaction, frame, field_59
        except (ModuleError, WireError) as exc:
            self.journal.finish(transaction, "not-sent", detail=str(exc))
            raise

    async def _settle(
        self,
        request: Message,
        outgoing: Message,
        transaction: int,
        exchange: Exchange,
        cls: MessageClass,
        field_59: Outgoing59 | None,
    ) -> Attempt:
        answer = _for_the_app(request, exchange.frame.message)
        financial = cls.reversible
        waiting = Waiting()
        closing = self._workers.run(
            self._close_checked, outgoing, transaction, exchange, cls, answer, waiting
        )
        try:
            mac_ok, for_app = await patiently(closing, SALE_PATIENCE)
            stages.mark("closed")
            self.reversals.settled(transaction)
        except TimeoutError:
            # the app is told 96 now; whatever the journal records later is reversed, and
            # goes before the next financial request once queued
            self.stan_map.withdraw(transaction)
            late = asyncio.ensure_future(
                self._recorded_too_late(closing, transaction, exchange, financial)
            )
            if financial:
                self._unclosed.add(late)
            late.add_done_callback(self._unclosed.discard)
            finding, what = waiting.now
            reason = (
                f"the answer was not checked and recorded within {SALE_PATIENCE:g} s, still "
                f"waiting for {what}; the transaction will be reversed"
            )
            return self._locally(request, "96", finding, reason)
        except JournalError as exc:
            self._unrecorded_answer(transaction, exchange, financial)
            reason = f"{exc}; the transaction will be reversed"
            return self._locally(request, "96", "storage.journal-unwritable", reason)
        except asyncio.CancelledError:
            # the agent stops with the answer on its way to the journal: the app never gets
            # it, so an approval the journal records is reversed (a row left pending is, at
            # the next start)
            if financial:
                closing.add_done_callback(lambda _: self._stopped_unanswered(closing, transaction))
            raise
        if not mac_ok:
            if financial:
                self.reversals.waiting.set()
            reason = "response MAC wrong; reversal queued" if financial else "response MAC wrong"
            return self._locally(request, "A0", "host.response-mac-wrong", reason)
        return Attempt(answer, exchange, transaction if financial else None, field_59, for_app)

    def _stopped_unanswered(
        self, closing: asyncio.Future[tuple[bool, tuple[Profile, bytes] | None]], transaction: int
    ) -> None:
        """The answer to ``transaction`` was recorded after its request was stopped: an
        approval is reversed (06), on the journal's thread, before the journal closes."""
        if closing.cancelled() or closing.exception() is not None:
            return  # nothing recorded: the row stays pending, reversed at the next start
        self.journal.later(self.journal.reverse_undelivered, transaction)

    def _unrecorded_answer(self, transaction: int, exchange: Exchange, financial: bool) -> None:
        """The app must not see an approval the journal does not have. The row stays pending
        (a reversal if the agent stops now); while it runs, the approval is kept here and its
        reversal queued as soon as the journal takes writes again. A financial request's
        decline is kept the same way, and its request settled once it is written: an approval
        that came for it late is then judged (reversed) as for any declined request, not left
        until a restart."""
        response = exchange.frame.message
        if not financial:
            return
        if codes.approved(response.text(39, "")):
            self.deferred.add(
                f"the approval of transaction {transaction}, answered 96: its reversal",
                lambda: self.journal.finish(
                    transaction,
                    "not-recorded",
                    response,
                    detail="approved, answered 96: the journal could not record it in time",
                    reversal_reason="06",
                ),
            )
            return

        def record_decline() -> None:
            self.journal.finish(
                transaction, "completed", response, detail="recorded late (the journal refused)"
            )
            # in the same step: an approval that came for it meanwhile is reversed even if the
            # agent stops before the loop judges it (the row is no longer pending then)
            late = self.reversals.held_approval(transaction)
            if late is not None:
                self.journal.reverse_late_approval(transaction, late)

        self.deferred.add(
            f"the decline of transaction {transaction}",
            record_decline,
            then=lambda: self.reversals.settled(transaction),
        )

    async def _recorded_too_late(
        self,
        closing: asyncio.Future[tuple[bool, tuple[Profile, bytes] | None]],
        transaction: int,
        exchange: Exchange,
        financial: bool,
    ) -> None:
        """Once the journal has taken (or refused) the answer the app was told 96 for: an
        approval it recorded is reversed (06), kept in memory while the disk refuses it (one
        whose MAC was wrong has its A0 reversal already)."""
        try:
            await closing
        except JournalError:
            self._unrecorded_answer(transaction, exchange, financial)
            return
        except Exception:  # logged by the worker; nothing was recorded to reverse
            self.reversals.settled(transaction)
            return
        self.reversals.settled(transaction)
        if financial:
            await self.reverse_undelivered(transaction)

    def _close_checked(
        self,
        outgoing: Message,
        transaction: int,
        exchange: Exchange,
        cls: MessageClass,
        answer: Message,
        waiting: Waiting,
    ) -> tuple[bool, tuple[Profile, bytes] | None]:
        """In a worker thread: check the response MAC and close the transaction durably, with a
        reversal (A0) queued if the MAC is wrong, or with the app's answer kept for a replay.
        While the module checks, the journal row and the app's answer (encoded) are made.
        Returns whether the MAC was right, and that encoded answer. ``waiting`` says what it
        waits for, for the app's answer if it outlasts the sale's patience."""
        stages.mark("worker-2")
        response = exchange.frame.message
        code = response.text(39, "")
        waiting.now = MODULE_CHECK
        # a refusal recovery acts on (97, 77, A0...) is no answer to give a repetition again:
        # after the repair the app may be told otherwise (a retry's, or the agent's own)
        kept = None if refused(response) else answer
        with self.macs.checking(outgoing, exchange, codes.approved(code)) as verdict:
            rendered = Rendered.of(response, kept)
            for_app = self._for_app(answer)
        mac_ok = verdict()
        waiting.now = JOURNAL
        stages.mark("mac-check")
        if not mac_ok:
            self.journal.finish(
                transaction,
                "mac-failed",
                rendered.without_answer(),
                detail="response MAC does not match",
                reversal_reason="A0" if cls.reversible else None,
            )
            return False, None
        original = outgoing.get(61)
        voids = None  # the original of an approved void: withdrawn from replays in the same step
        if cls.voids and codes.approved(code) and isinstance(original, str):
            voids = (original[6:12], original[:6])
        self.journal.finish(transaction, "completed", rendered, voids=voids)
        stages.mark("outcome-synced")
        return True, for_app

    def _for_app(self, answer: Message) -> tuple[Profile, bytes] | None:
        profile = self._config().wire.profile
        try:
            return profile, encode_message(answer, profile)
        except WireError:  # the app's side encodes it again, and answers 96 with the reason
            return None

    def _prepare(self, request: Message, cls: MessageClass, references: dict[int, str]) -> Message:
        fields = dict(request.fields)
        fields.pop(11, None)  # the journal assigns the agent's own STAN
        if cls.name == "reversal":
            # a reversal carries no 59 (DESIGN.md section 4): an app's copy of its purchase's
            # would send the A1 PIN block again
            fields.pop(field59.FIELD, None)
        fields.update(references)
        terminal = self.terminal
        fields[41], fields[42] = terminal.tid, terminal.mid
        field_60 = fields.get(60)
        if cls.current_batch and isinstance(field_60, str):
            # 60.2 is the current batch: the host's (DESIGN.md section 10)
            fields[60] = with_batch(field_60, self.journal.batch)
        if cls.needs_mac(request):
            fields[64] = MAC_PLACEHOLDER
        else:
            fields.pop(64, None)
        return Message(request.mti, dict(sorted(fields.items())), request.wire)

    async def reverse_undelivered(self, transaction: int) -> None:
        """The app could not receive the answer to ``transaction``: if it is an approval,
        queue its reversal (06). Until the journal has it, no repetition is answered from it."""
        self.stan_map.withdraw(transaction)
        queued = await self.deferred.now_or_later(
            f"the reversal of the undelivered answer to transaction {transaction}",
            lambda: self.journal.reverse_undelivered(transaction),
        )
        if queued is not None:
            self.reversals.waiting.set()

    def _locally(self, request: Message, code: str, finding: str, reason: str) -> Attempt:
        return Attempt(self.local(request, code, finding, reason), None)

    def local(self, request: Message, code: str, finding: str, reason: str) -> Message:
        """The agent's own answer to ``request``, counted and journalled."""
        self.stats.local_answers += 1
        log.warning("answered %s locally with %s: %s: %s", request.mti, code, finding, reason)
        self.journal.note(
            "local-answer", mti=request.mti, code=code, finding=finding, reason=reason
        )
        return local_answer(request, code, finding, reason)

    async def sign_in(self, tmk_tag: TagLoader | None = None) -> SignInResult:
        """Sign in; requests wait meanwhile (see ``_keys_settled``). ``tmk_tag`` loads the
        master key of a tag 00 in the 0810 (a remote master-key download, DESIGN.md 18); by
        default, what the acquirer's form says (``tag_loader``)."""
        tmk_tag = tmk_tag or self._tag_loader()
        self._signins_running += 1
        self._keys_settled.clear()
        try:
            if not await self._in_flight.settled():
                log.warning("sign-in goes ahead of %d request(s) still without an answer: theirs "
                            "may fail the MAC check", self._in_flight.running)  # fmt: skip
            async with self._signin_lock:
                config = self._config()
                slot = config.module.key_slot
                # read afresh: a master-key download may have given the slot another family
                self.macs.families.forget()
                try:
                    family = await self.macs.families.read(slot)
                except ModuleError as exc:
                    # the sign-in still goes: the host's answer and the module's refusal of its
                    # keys are what recovery judges (a tampered module is a person's to see to)
                    log.warning("key family of slot %d unknown (%s): DES assumed", slot, exc)
                    family = RULES[KeyFamily.DES]
                result = await sign_in(
                    terminal=self.terminal,
                    scheme=config.wire.key_scheme,
                    key_layout=config.wire.key_layout,
                    key_slot=slot,
                    family=family.family,
                    journal=self.journal,
                    module=self.macs.module,
                    link=self.link,
                    tmk_tag=tmk_tag,
                )
                self.last_signin = result
                self.tusn.forget()  # a new session may be a new module: its TUSN is asked again
                signed_in = {"scheme": result.scheme, "kcvs": result.kcvs}
                self._tell_hooks("signed-in", {**config.terminal.identity(), **signed_in})
                if self.on_signed_in is not None:
                    self.on_signed_in()
                return result
        finally:
            self._signins_running -= 1
            if not self._signins_running:
                self._keys_settled.set()
