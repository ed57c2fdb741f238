"""MACs of the transaction layer, computed and checked through the card module (it holds the MAK;
the agent only computes R). R's block is the slot's family's: 8 bytes for DES/3DES, 16 for SM4
(DESIGN.md section 4). Every method blocks on the module: call it in a worker thread."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from agent.host.mux import Exchange
from agent.keys.family import SlotFamilies
from agent.wire.frame import HEADER_BYTES, TPDU_BYTES
from agent.wire.mac import carries_mac, encode_for_mac, mab, mac_block, mac_matches
from agent.wire.message import Message, encode_message
from agent.wire.profile import Profile
from drivers.module import CardModule, ModuleError, ModuleLinkError, ModuleTimeout, Outcome

log = logging.getLogger(__name__)

T = TypeVar("T")


class Macs:
    def __init__(
        self, module: CardModule, key_slot: Callable[[], int], profile: Callable[[], Profile]
    ) -> None:
        """``key_slot`` and ``profile`` are read at each use: a reload may change them."""
        self.module = module
        self.families = SlotFamilies(module)  # the sign-in forgets them: the TMK may change
        self._key_slot = key_slot
        self._profile = profile
        # a request's encoding and MAC run here while the journal syncs its row (encode_beside)
        self._lane = ThreadPoolExecutor(1, thread_name_prefix="pos-agent-mac")
        self.order = LongerFirst()

    def _encoded(self, message: Message) -> tuple[bytes, tuple[bytes, int] | None]:
        """``message`` encoded under the profile in effect, and, when field 64 is present, the
        R its MAC is computed from with the slot that computes it."""
        profile = self._profile()
        if 64 not in message:
            return encode_message(message, profile), None
        slot = self._key_slot()
        body, r = encode_for_mac(message, profile, self.families.of(slot).mac_block)
        return body, (r, slot)

    def encode(self, message: Message) -> bytes:
        """Encode, with the MAC from the module when field 64 is present."""
        body, mac_of = self._encoded(message)
        if mac_of is None:
            return body
        r, slot = mac_of
        began = time.perf_counter()
        mac = self.module.mac_from_block(r, slot)
        self.order.module_took(time.perf_counter() - began)
        return body + mac

    def encode_beside(
        self, message: Message, record: Callable[[Callable[[], None]], T]
    ) -> tuple[T, Callable[[], bytes]]:
        """``record(syncing)`` (the journal recording ``message``, calling ``syncing`` as its
        commit begins) with ``message`` encoded and MACed beside it, the longer of the two
        started first (:class:`LongerFirst`): what ``record`` returned, and a callable that
        gives the encoded message or raises the encoding's error (a ``WireError``, a
        ``ModuleError``). Module first, the encoding is done here before ``record`` (an error
        in it is raised before anything is recorded), the MAC command put on the line, and its
        answer read after; disk first, the encoding, the command and the answer all run on the
        MAC thread while the disk syncs."""
        if self.order.module_first:
            with self._computing(message) as encoded:
                return self._synced(record, None), encoded
        encoding: list[Future[bytes]] = []  # started as the commit begins

        def start() -> None:
            encoding.append(self._lane.submit(self.encode, message))

        recorded = self._synced(record, start)
        return recorded, lambda: encoding[0].result()

    def _synced(
        self, record: Callable[[Callable[[], None]], T], then: Callable[[], None] | None
    ) -> T:
        """``record(syncing)``, its commit timed from ``syncing`` (which calls ``then``) on."""
        began = 0.0

        def syncing() -> None:
            nonlocal began
            began = time.perf_counter()
            if then is not None:
                then()

        recorded = record(syncing)
        if began:
            self.order.sync_took(time.perf_counter() - began)
        return recorded

    @contextlib.contextmanager
    def _computing(self, message: Message) -> Iterator[Callable[[], bytes]]:
        """``message`` encoded, here and now, with its MAC from the module when field 64 is
        present: what the callable given returns once the caller's ``with`` block has ended (or
        it raises the module's error). The module computes the MAC while the block runs."""
        body, mac_of = self._encoded(message)
        if mac_of is None:
            yield lambda: body
            return
        r, slot = mac_of
        with self.module.computing_mac(r, slot) as mac:
            yield lambda: body + mac.result()

    def close(self) -> None:
        """Once the encodings started have ended."""
        self._lane.shutdown()

    def _matches(self, body: bytes) -> bool:
        """Whether the MAC of an encoded message (MTI onwards) verifies under the slot's MAK."""
        slot = self._key_slot()
        block = self.families.of(slot).mac_block
        return mac_matches(body, lambda r: self.module.mac_from_block(r, slot), block)

    def _r(self, body: bytes, slot: int) -> bytes:
        """R of an encoded message's MAB, on the slot family's block (DESIGN.md section 4)."""
        return mac_block(mab(body), self.families.of(slot).mac_block)

    def authentic(self, exchange: Exchange) -> bool:
        """Whether a response carries a MAC that verifies under the session's MAK (an answer
        nobody waited for moves money only then)."""
        if 64 not in exchange.frame.message:
            return False
        body = exchange.raw[TPDU_BYTES + HEADER_BYTES :]
        try:
            return self._matches(body)
        except ModuleError as exc:
            log.error("cannot check the MAC of an unmatched response: %s", exc)
            return False

    def response_ok(self, outgoing: Message, exchange: Exchange, approved: bool) -> bool:
        """An approval of a MACed request must carry a good MAC. A decline moves no money, and
        the declines that matter most come from a host that lost our session or keys (97, A0):
        they carry no MAC, or one under keys we no longer share."""
        with self.checking(outgoing, exchange, approved) as verdict:
            pass
        return verdict()

    @contextlib.contextmanager
    def checking(
        self, outgoing: Message, exchange: Exchange, approved: bool
    ) -> Iterator[Callable[[], bool]]:
        """:meth:`response_ok`, the module checking the MAC while the caller's ``with`` block
        runs (the journal's row for the answer is made meanwhile): the verdict is what the
        callable given returns once the block has ended."""
        if 64 not in outgoing or not approved:
            yield lambda: True
            return
        if 64 not in exchange.frame.message:
            yield lambda: False
            return
        body = exchange.raw[TPDU_BYTES + HEADER_BYTES :]
        slot = self._key_slot()
        try:
            r = self._r(body, slot)
        except ModuleError as exc:
            unknown: ModuleError | None = exc  # the slot's family: no round trip to start
        else:
            unknown = None
        if unknown is not None:
            yield lambda: self._verdict(body, unknown)
            return
        began = time.perf_counter()
        with self.module.computing_mac(r, slot) as mac:
            yield lambda: self._verdict(body, mac)
        # the answer is read as the block ends: the round trip, or the block's work if longer
        self.order.module_took(time.perf_counter() - began)

    def _verdict(self, body: bytes, first: Outcome[bytes] | ModuleError) -> bool:
        # An approval is at stake: a line that lost a round (noise, a slow module) gets one more
        # command before the approval is taken for unverifiable and reversed.
        try:
            if isinstance(first, ModuleError):
                raise first
            return carries_mac(body, first.result())
        except (ModuleLinkError, ModuleTimeout) as exc:
            log.warning("response MAC check: %s; asking the module once more", exc)
        except ModuleError as exc:
            log.error("cannot check the response MAC: %s", exc)
            return False
        try:
            return self._matches(body)
        except ModuleError as exc:
            log.error("cannot check the response MAC: %s", exc)
            return False


class LongerFirst:
    """Which of a request's two slow steps starts first: the MAC command to the module or the
    journal's commit of the request's row, by which took longer lately. A module on a serial
    line (3.2 ms a MAC at 115200 baud) gets its command before the row is written, on the
    recording thread, and the commit runs while it computes; beside a slower disk the encoding,
    the command and the answer wait for the commit to begin and run on the MAC thread, none of
    their CPU work on the path (issue 26: on this VM's disk that took 0.1-0.3 ms off each
    purchase; with the module on a line's time, it added 0.2-0.3 ms)."""

    WEIGHT = 1 / 8  # of each new sample in the running averages: a few requests to turn

    __slots__ = ("_module_s", "_sync_s")

    def __init__(self) -> None:
        self._module_s: float | None = None
        self._sync_s: float | None = None

    @property
    def module_first(self) -> bool:
        return (self._module_s or 0.0) > (self._sync_s or 0.0)

    def module_took(self, seconds: float) -> None:
        """A MAC's round trip: the command on the line to its answer read."""
        self._module_s = self._averaged(self._module_s, seconds)

    def sync_took(self, seconds: float) -> None:
        """A request row's commit: from its start to the row recorded."""
        self._sync_s = self._averaged(self._sync_s, seconds)

    @classmethod
    def _averaged(cls, average: float | None, seconds: float) -> float:
        return seconds if average is None else average + (seconds - average) * cls.WEIGHT
