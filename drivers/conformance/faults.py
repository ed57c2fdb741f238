"""Cases of a line that goes wrong: noise in both directions and a module unplugged, then
plugged in again. Only a module with fault injection can be made to do that on request (the
simulator, ``agent sim module``); against any other the cases are skipped."""

from __future__ import annotations

from typing import Protocol

from drivers.conformance.case import Failed, Skipped, expect
from drivers.module import CardModule, ModuleError

NOISE_RATE = 0.01  # of the bytes, in each direction: every third frame or so is damaged
NOISY_ROUNDS = 10


class FaultInjection(Protocol):
    """What the run may do to the line between the driver and the module."""

    def noise(self, rate: float) -> None: ...

    def unplug(self) -> None: ...

    def replug(self) -> None: ...


def _faults(faults: FaultInjection | None) -> FaultInjection:
    if faults is None:
        raise Skipped("needs a module that injects faults on request: the simulator (--sim)")
    return faults


def noisy_line(module: CardModule, faults: FaultInjection | None, slot: int) -> str:
    """INFO and KEY_STATUS through noise give what they give on a clean line."""
    faults = _faults(faults)
    clean = (module.info(), module.key_status(slot))
    faults.noise(NOISE_RATE)
    try:
        for round_ in range(NOISY_ROUNDS):
            noisy = (module.info(), module.key_status(slot))
            expect(
                noisy == clean,
                f"round {round_ + 1}: through the noise INFO and KEY_STATUS slot {slot} gave "
                f"{noisy!r}; on a clean line {clean!r}",
            )
    finally:
        faults.noise(0.0)
    return (
        f"{NOISY_ROUNDS} rounds of INFO and KEY_STATUS slot {slot} through {NOISE_RATE:.0%} "
        "noise both ways answered as on a clean line"
    )


def unplug_and_replug(module: CardModule, faults: FaultInjection | None) -> str:
    """Unplugged, a command fails as a module error within its time; plugged in again, the next
    command works without a new driver (a USB module that was pulled out and put back)."""
    faults = _faults(faults)
    module.ping()
    faults.unplug()
    try:
        try:
            module.ping()
        except ModuleError as error:
            unplugged = f"{type(error).__name__}: {error}"
        else:
            raise Failed("PING was answered while the module was unplugged")
    finally:
        faults.replug()
    try:
        module.ping()
    except ModuleError as error:
        raise Failed(f"after the replug PING failed: {error}") from None
    return f"unplugged: {unplugged}; after the replug PING answered"
