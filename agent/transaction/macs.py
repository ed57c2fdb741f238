"""MACs of the transaction layer, computed and checked through the card module (it holds the MAK;
the agent only computes R). R's block is the slot's family's: 8 bytes for DES/3DES, 16 for SM4
(DESIGN.md section 4). Every method blocks on the module: call it in a worker thread."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor

from agent.host.mux import Exchange
from agent.keys.family import SlotFamilies
from agent.wire.frame import HEADER_BYTES, TPDU_BYTES
from agent.wire.mac import carries_mac, encode_for_mac, mab, mac_block, mac_matches
from agent.wire.message import Message, encode_message
from agent.wire.profile import Profile
from drivers.module import CardModule, ModuleError, ModuleLinkError, ModuleTimeout, Outcome

log = logging.getLogger(__name__)


class Macs:
    def __init__(
        self, module: CardModule, key_slot: Callable[[], int], profile: Callable[[], Profile]
    ) -> None:
        """``key_slot`` and ``profile`` are read at each use: a reload may change them."""
        self.module = module
        self.families = SlotFamilies(module)  # the sign-in forgets them: the TMK may change
        self._key_slot = key_slot
        self._profile = profile
        # a request's encoding and MAC run here while the journal syncs its row (:class:`Encoding`)
        self._lane = ThreadPoolExecutor(1, thread_name_prefix="pos-agent-mac")

    def encode(self, message: Message) -> bytes:
        """Encode, with the MAC from the module when field 64 is present."""
        profile = self._profile()
        if 64 not in message:
            return encode_message(message, profile)
        slot = self._key_slot()
        body, r = encode_for_mac(message, profile, self.families.of(slot).mac_block)
        return body + self.module.mac_from_block(r, slot)

    def encoding(self, message: Message) -> Encoding:
        """:meth:`encode` on the MAC thread, from when the encoding returned is started."""
        return Encoding(self._lane, self.encode, message)

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
        with self.module.computing_mac(r, slot) as mac:
            yield lambda: self._verdict(body, mac)

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


class Encoding:
    """A request encoded for the host, with its MAC, on another thread than its caller's. The
    caller starts it as the journal's commit of the request's row begins (``Journal.begin``'s
    ``syncing``): the encoding, the MAC command, the module's computing and its answer all run
    while the disk syncs, which holds no lock the encoding needs (issue 26: started before the
    row is written, the encoding took the GIL from it; on the recording thread, it ran before
    the row did)."""

    __slots__ = ("_encode", "_future", "_lane", "_message")

    def __init__(
        self, lane: Executor, encode: Callable[[Message], bytes], message: Message
    ) -> None:
        self._lane = lane
        self._encode = encode
        self._message = message
        self._future: Future[bytes] | None = None

    def start(self) -> None:
        self._future = self._lane.submit(self._encode, self._message)

    def result(self) -> bytes:
        """The frame's body (MTI onwards); raises what the encoding raised (a ``WireError``, a
        ``ModuleError``)."""
        if self._future is None:
            raise RuntimeError("an encoding's result asked before it was started")
        return self._future.result()
