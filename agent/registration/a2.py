"""Field 59 of a purchase or pre-authorisation as it leaves (DESIGN.md section 17): the app's
`A2` checked, or the agent's built through the card module where the app sent none
(``registration.tusn = "module"``), and `A5` (the location) added where configured.

The card module computes the ciphertext with the TUSN key it holds (command TUSN): the agent
only carries the random factor in and the answer out. The answer depends only on the TUSN and
the factor, so one per card is kept: a card paying twice costs one module round trip.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from agent.config import RegistrationConfig
from agent.registration.refusals import A2, A2Sent
from agent.wire import field59
from agent.wire.errors import DecodeError, WireError
from agent.wire.message import Message, tracks_encrypted
from drivers.module import CardModule, ModuleError, TusnAnswer

log = logging.getLogger(__name__)

FACTOR_DIGITS = 6
_KEPT_ANSWERS = 64  # cards whose module answer is kept (one per card: a few hundred bytes)


def random_factor(request: Message) -> str | None:
    """A2's random factor: the last 6 digits of the PAN of field 2, else of track 2 (35) when
    clear, else of the QR payment code (59 `A3`); None when the request carries none."""
    pan = request.get(2)
    if not isinstance(pan, str) or not pan.isdigit():
        track = request.get(35)
        clear = isinstance(track, str) and not tracks_encrypted(request.fields)
        pan = track.split("=", 1)[0] if clear and isinstance(track, str) else None
    if not (isinstance(pan, str) and pan.isdigit()):
        code = _usage(request, field59.QR_CODE)
        pan = code.decode("ascii", "replace") if code is not None else None
    if isinstance(pan, str) and len(pan) >= FACTOR_DIGITS and pan[-FACTOR_DIGITS:].isdigit():
        return pan[-FACTOR_DIGITS:]
    return None


def _field59(message: Message) -> bytes | None:
    value = message.get(field59.FIELD)
    return None if value is None else field59.field_bytes(value)


def _usage(message: Message, tag: str) -> bytes | None:
    """Usage ``tag`` of the message's field 59; None also when 59 does not parse as usages."""
    try:
        return field59.find_usage(_field59(message), tag)
    except DecodeError:
        return None


def _field59_as_sent(message: Message) -> bytes | None:
    value = message.get(field59.FIELD)
    return value if isinstance(value, bytes) else None


@dataclass(frozen=True)
class Outgoing59:
    """What goes to the host in field 59 (None: no field 59) and what its A2 is."""

    value: bytes | None
    a2: A2Sent


@functools.lru_cache(maxsize=_KEPT_ANSWERS)
def _a2_of(device_type: str, tusn: str, factor: str, ciphertext: str, version: str) -> bytes:
    """A2 as :func:`field59.build_a2` builds and checks it, kept for the cards seen lately: a
    card's next purchase costs no building and parsing again (tens of microseconds here, more on
    a terminal's CPU, on every purchase's path)."""
    return field59.build_a2(device_type, tusn, factor, ciphertext, version)


class TusnSource:
    """Builds field 59 for the requests of the classes that must carry A2. Runs in the worker
    thread that records and MACs the request (one hop for all three module and disk steps)."""

    def __init__(
        self,
        module: CardModule,
        settings: Callable[[], RegistrationConfig],
        default_version: str,
    ) -> None:
        """``settings`` is read at each use: a reload may change the mode or the version."""
        self._module = module
        self._settings = settings
        self._default_version = default_version
        self._answers: OrderedDict[str, TusnAnswer] = OrderedDict()
        self._lock = threading.Lock()
        self.last_tusn = ""  # the module's TUSN as last answered, for the status and telemetry

    def outgoing(
        self, request: Message, location: bytes | None, room: int = field59.MAX_BYTES
    ) -> Outgoing59:
        """Field 59 for ``request`` (a class that carries A2) and what its A2 is. An app's 59
        that does not parse as usages goes out as it came, its A2 taken for malformed. The
        location (A5) is added where it fits in ``room`` bytes (an acquirer's profile may hold
        59 to less than 999): it is optional, and never the reason a request is not sent."""
        settings = self._settings()
        try:
            current = _field59(request)
            found = field59.find_usage(current, field59.TUSN_USAGE)
        except DecodeError as exc:
            return Outgoing59(_field59_as_sent(request), A2Sent(A2.MALFORMED, problem=str(exc)))
        if found is not None:
            a2 = self._checked(found, random_factor(request))
        elif settings.tusn == "module":
            built, a2 = self._built(request, settings)
            if built is not None:
                current = field59.with_usage(current, field59.TUSN_USAGE, built)
        else:
            a2 = A2Sent(A2.MISSING, problem=f'registration.tusn = "{settings.tusn}"')
        if location is not None and field59.find_usage(current, field59.LOCATION) is None:
            try:
                located = field59.with_usage(current, field59.LOCATION, location)
            except WireError as exc:  # a field 59 already near its 999 bytes
                log.warning("field 59 A5 left out: %s", exc)
            else:
                if len(located) <= room:
                    current = located
                else:
                    log.warning("field 59 A5 left out: with it 59 takes %d bytes, more than "
                                "the %d the wire profile holds", len(located), room)  # fmt: skip
        return Outgoing59(current, a2)

    @staticmethod
    def _checked(value: bytes, card_factor: str | None) -> A2Sent:
        problem = field59.a2_problem(value, card_factor)
        if problem is not None:  # forwarded as it is: the acquirer decides, the refusal is named
            log.warning("the payment app's field 59 A2 is malformed: %s", problem)
            return A2Sent(A2.MALFORMED, problem=problem)
        return A2Sent(A2.APP, field59.sub_usages(value).get("02", ""))

    def _built(self, request: Message, settings: RegistrationConfig) -> tuple[bytes | None, A2Sent]:
        factor = random_factor(request)
        if factor is None:
            return None, A2Sent(A2.MISSING, problem="no PAN or payment code for A2's factor")
        try:
            answer = self._answer(factor)
        except ModuleError as exc:
            log.error("field 59 A2 left out: the card module's TUSN failed: %s", exc)
            return None, A2Sent(A2.MISSING, problem=f"card module: {exc}")
        version = settings.app_version or self._default_version
        try:
            value = _a2_of(answer.device_type, answer.tusn, factor, answer.ciphertext, version)
        except WireError as exc:  # the module's answer does not make a well-formed A2
            log.error("field 59 A2 left out: %s", exc)
            return None, A2Sent(A2.MISSING, answer.tusn, problem=str(exc))
        return value, A2Sent(A2.MODULE, answer.tusn)

    def forget(self) -> None:
        """Ask the module again from now on (after a sign-in: the module may have been
        swapped, and another module has another TUSN)."""
        with self._lock:
            self._answers.clear()

    def _answer(self, factor: str) -> TusnAnswer:
        with self._lock:
            answer = self._answers.get(factor)
            if answer is not None:
                self._answers.move_to_end(factor)
                return answer
        answer = self._module.tusn(factor)
        with self._lock:
            self._answers[factor] = answer
            while len(self._answers) > _KEPT_ANSWERS:
                self._answers.popitem(last=False)
            if answer.tusn != self.last_tusn:
                self._answers.clear()  # another module, another TUSN: no older answer holds
                self._answers[factor] = answer
                self.last_tusn = answer.tusn
        return answer
