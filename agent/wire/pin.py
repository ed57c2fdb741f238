"""ISO 9564-1 format 0 PIN blocks (field 52, DESIGN.md section 5).

The agent never sees a clear PIN: the card module builds and encrypts the block from its own
keypad. These functions are what the module and the host do with the *clear* block, so the
simulators build and check it here, once; :func:`pin_pan` is what the payment app sends the
module (the 12 rightmost PAN digits, check digit excluded); :func:`carries_pin` tells whether a
request holds an (encrypted) block at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.wire import field59
from agent.wire.errors import DecodeError, WireError

if TYPE_CHECKING:
    from agent.wire.message import Message

BLOCK = 8
PAN_DIGITS = 12


class PinError(WireError):
    """A PIN, PAN or PIN block that format 0 cannot carry."""


def carries_pin(request: Message) -> bool:
    """Whether ``request`` holds a PIN block: a 52 that is not the 8 zero bytes an SM4 request
    carries, or usage A1 (the SM4 block) in 59. A block is encrypted under the PIN key of the
    sign-in before it was made, and a later sign-in replaces that key."""
    block = request.get(52)
    if isinstance(block, bytes) and any(block):
        return True
    raw = request.get(field59.FIELD)
    if raw is None:
        return False
    try:
        return field59.find_usage(field59.field_bytes(raw), field59.SM4_PIN_BLOCK) is not None
    except DecodeError:
        return False


def pin_pan(pan: str) -> str:
    """The 12 PAN digits format 0 uses: the rightmost 12 without the check digit."""
    if not pan.isdigit() or len(pan) < PAN_DIGITS + 1:
        raise PinError(f"a PAN of {len(pan)} characters has no 12 digits before its check digit")
    return pan[-PAN_DIGITS - 1 : -1]


def _pan_field(pan12: str) -> bytes:
    if len(pan12) != PAN_DIGITS or not pan12.isdigit():
        raise PinError("the PAN part of a PIN block is 12 digits")
    return bytes.fromhex("0000" + pan12)


def format0(pin: str, pan12: str) -> bytes:
    """The clear format 0 block: ``0 | length | PIN | F...`` XOR ``0000 | 12 PAN digits``."""
    if not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise PinError("a PIN is 4 to 12 digits")
    pin_field = bytes.fromhex(f"0{len(pin):X}{pin}".ljust(2 * BLOCK, "F"))
    return bytes(a ^ b for a, b in zip(pin_field, _pan_field(pan12), strict=True))


def pin_of_format0(block: bytes, pan12: str) -> str:
    """The PIN in a clear format 0 block; :class:`PinError` when it is not one."""
    if len(block) != BLOCK:
        raise PinError(f"a PIN block is {BLOCK} bytes, got {len(block)}")
    digits = bytes(a ^ b for a, b in zip(block, _pan_field(pan12), strict=True)).hex().upper()
    length = int(digits[1], 16)
    pin, padding = digits[2 : 2 + length], digits[2 + length :]
    if digits[0] != "0" or not 4 <= length <= 12 or not pin.isdigit() or set(padding) - {"F"}:
        raise PinError("the block is not ISO 9564 format 0 for this PAN")
    return pin
