"""A slot's key family and what it decides (DESIGN.md sections 4, 5 and 18): the sign-in schemes
``wire.key_scheme = "auto"`` tries, the MAC block (R is 8 bytes for DES/3DES, 16 for SM4), the
module's MAC over a whole MAB, the PIN block format and field 53. One table, so no part of the
agent decides the family's consequences on its own.

The family is the last byte of KEY_STATUS. It is read once per slot and kept until a sign-in
(a remote master-key download may have given the slot a TMK of the other family) or a reload.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from drivers.module import CardModule, KeyFamily, MacAlgorithm, PinFormat


@dataclass(frozen=True)
class FamilyRules:
    """What one key family decides, from the sign-in schemes to field 53."""

    family: KeyFamily
    schemes: tuple[str, ...]  # sign-in schemes (60.3) in the order "auto" tries them
    mac_block: int  # bytes of R, the XOR block the module MACs (algorithm 0x81 or 0x83)
    mac_whole: MacAlgorithm  # the module's MAC over a whole MAB (the self-test's other way)
    pin_format: PinFormat
    field_53_pin: str  # 53 of a request that carries a PIN
    field_53_no_pin: str  # 53 of one that carries none

    @property
    def name(self) -> str:
        return self.family.name


RULES: dict[KeyFamily, FamilyRules] = {
    rules.family: rules
    for rules in (
        # 53: PIN format 0 (2), double-length 3DES (6)
        FamilyRules(
            KeyFamily.DES, ("003", "004"), 8, MacAlgorithm.CUP_ECB, PinFormat.ISO_FORMAT_0,
            "2600000000000000", "0600000000000000",
        ),
        # 53: SM4 PIN block (2), SM4 (3); the block itself travels in 59 A1 (section 4)
        FamilyRules(
            KeyFamily.SM4, ("006",), 16, MacAlgorithm.SM4, PinFormat.SM4,
            "2300000000000000", "0300000000000000",
        ),
    )
}  # fmt: skip


def rules_of(family: KeyFamily | str) -> FamilyRules:
    """The rules of ``family``, a :class:`KeyFamily` or its name ("DES", "SM4"); ValueError for
    a family the agent does not know."""
    try:
        return RULES[family if isinstance(family, KeyFamily) else KeyFamily[family]]
    except KeyError:
        raise ValueError(f"no key family {family!r}; expected DES or SM4") from None


class SlotFamilies:
    """The family of each slot, asked of the module (KEY_STATUS) once and kept until
    :meth:`forget`. Thread-safe: the MACs ask from worker threads."""

    def __init__(self, module: CardModule) -> None:
        self.module = module
        self._known: dict[int, KeyFamily] = {}
        self._lock = threading.Lock()
        # bumped by forget(): a KEY_STATUS read before it must not be kept after it
        self._generation = 0

    def of(self, slot: int) -> FamilyRules:
        """The rules of ``slot``'s family. Blocks on the module the first time: call it in a
        worker thread. Raises the module's errors."""
        with self._lock:
            known, generation = self._known.get(slot), self._generation
        if known is None:
            known = self.module.key_status(slot).family
            with self._lock:
                if generation == self._generation:
                    self._known[slot] = known
        return RULES[known]

    async def read(self, slot: int) -> FamilyRules:
        """:meth:`of` from a coroutine."""
        return await asyncio.to_thread(self.of, slot)

    def forget(self) -> None:
        """Ask the module again next time: a sign-in or a reload is under way."""
        with self._lock:
            self._known.clear()
            self._generation += 1
