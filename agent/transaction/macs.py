"""MACs of the transaction layer, computed and checked through the card module (it holds the MAK;
the agent only computes R). R's block is the slot's family's: 8 bytes for DES/3DES, 16 for SM4
(DESIGN.md section 4). Every method blocks on the module: call it in a worker thread."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

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

    @contextlib.contextmanager
    def encoding(self, message: Message) -> Iterator[Callable[[], bytes]]:
        """``message`` encoded, with its MAC from the module when field 64 is present: what the
        callable given returns once the caller's ``with`` block has ended (or it raises the
        module's error). The encoding is done first, here; the module computes the MAC while
        the block runs (the journal recording the request: the disk and the module are
        different devices, so neither waits for the other), on this thread (issue 26: through a
        thread of its own, the hand-offs and the GIL cost more than the overlap gave back)."""
        profile = self._profile()
        if 64 not in message:
            body = encode_message(message, profile)
            yield lambda: body
            return
        slot = self._key_slot()
        body, r = encode_for_mac(message, profile, self.families.of(slot).mac_block)
        with self.module.computing_mac(r, slot) as mac:
            yield lambda: body + mac.result()

    def encode(self, message: Message) -> bytes:
        """Encode, with the MAC from the module when field 64 is present."""
        with self.encoding(message) as encoded:
            pass
        return encoded()

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
