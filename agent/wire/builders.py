"""Builders for the messages the agent sends, and the generic response a host answers with."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.wire.message import FieldValue, Message
from agent.wire.working_keys import SCHEMES

CURRENCY_CNY = "156"
PURCHASE_PROCESSING_CODE = "000000"
MESSAGE_TYPE_PURCHASE = "22"
MESSAGE_TYPE_NETWORK = "00"
NETWORK_ECHO = "301"
NETWORK_SIGN_OFF = "002"
MAC_PLACEHOLDER = bytes(8)
REVERSAL_REASONS = {
    "98": "no response in time",
    "A0": "response MAC wrong",
    "06": "other",
}
# Fields of the original that a reversal repeats (CUP: same STAN, amount, card and batch, and
# what a void or completion named: its original, 61, and the authorisation code, 38).
_REVERSAL_COPIES = (2, 3, 4, 11, 14, 22, 23, 25, 38, 41, 42, 49, 53, 55, 60, 61)
# Fields a host response echoes from its request.
_RESPONSE_ECHOES = (2, 3, 4, 11, 22, 25, 41, 42, 49, 60)


def stan_text(stan: int) -> str:
    if not 1 <= stan <= 999_999:
        raise ValueError(f"STAN must be 1-999999, got {stan}")
    return f"{stan:06d}"


def batch_text(batch: int) -> str:
    if not 0 <= batch <= 999_999:
        raise ValueError(f"batch number must be 0-999999, got {batch}")
    return f"{batch:06d}"


def field60(message_type: str, batch: int, network_code: str = "000") -> str:
    """60.1 message type (n2), 60.2 batch (n6), 60.3 network management code (n3)."""
    return message_type + batch_text(batch) + network_code


def with_batch(field_60: str, batch: int) -> str:
    """Field 60 with 60.2 set to ``batch``; 60.1 and what follows 60.2 kept."""
    return field_60[:2] + batch_text(batch) + field_60[8:]


@dataclass(frozen=True)
class Terminal:
    """Who the terminal is to the host: its TID (field 41) and MID (field 42)."""

    tid: str
    mid: str


def _network(mti: str, terminal: Terminal, stan: int, batch: int, code: str) -> Message:
    return Message(
        mti,
        {
            11: stan_text(stan),
            41: terminal.tid,
            42: terminal.mid,
            60: field60(MESSAGE_TYPE_NETWORK, batch, code),
        },
    )


def signin_request(
    terminal: Terminal, *, stan: int, batch: int, scheme: str = "003", operator: str = "001"
) -> Message:
    """0800 sign-in; ``scheme`` is 60.3: 001 single DES, 003 double length, 004 with TDK."""
    if scheme not in SCHEMES:
        raise ValueError(f"sign-in scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    message = _network("0800", terminal, stan, batch, scheme)
    message.fields[63] = operator
    return message


def echo_request(terminal: Terminal, *, stan: int, batch: int) -> Message:
    return _network("0820", terminal, stan, batch, NETWORK_ECHO)


def signoff_request(terminal: Terminal, *, stan: int, batch: int) -> Message:
    return _network("0820", terminal, stan, batch, NETWORK_SIGN_OFF)


def download_request(
    mti: str, terminal: Terminal, *, stan: int, batch: int, code: str, field62: bytes | None
) -> Message:
    """0800 or 0820 of a session download (DESIGN.md section 16); ``code`` is 60.3."""
    message = _network(mti, terminal, stan, batch, code)
    if field62 is not None:
        message.fields[62] = field62
    return message


@dataclass(frozen=True)
class Card:
    """What the payment app read from the card. ``repr`` shows none of it."""

    pan: str | None = field(default=None, repr=False)
    expiry: str | None = field(default=None, repr=False)  # YYMM
    track2: str | None = field(default=None, repr=False)
    track3: str | None = field(default=None, repr=False)
    entry_mode: str = "021"  # 02 magnetic stripe, 1 PIN can be entered
    sequence_number: str | None = None
    pin_block: bytes | None = field(default=None, repr=False)
    icc_data: bytes | None = field(default=None, repr=False)


def purchase_request(
    terminal: Terminal, *, stan: int, batch: int, amount_fen: int, card: Card
) -> Message:
    """0200 purchase with a MAC placeholder in field 64 (the MAC is computed when encoding)."""
    if not 0 < amount_fen < 10**12:
        raise ValueError(f"amount must be 1 to 999999999999 fen, got {amount_fen}")
    fields: dict[int, FieldValue] = {
        3: PURCHASE_PROCESSING_CODE,
        4: f"{amount_fen:012d}",
        11: stan_text(stan),
        22: card.entry_mode,
        25: "00",
        41: terminal.tid,
        42: terminal.mid,
        49: CURRENCY_CNY,
        60: field60(MESSAGE_TYPE_PURCHASE, batch),
        64: MAC_PLACEHOLDER,
    }
    optional = {
        2: card.pan,
        14: card.expiry,
        23: card.sequence_number,
        35: card.track2,
        36: card.track3,
        52: card.pin_block,
        55: card.icc_data,
    }
    fields.update({number: value for number, value in optional.items() if value is not None})
    if card.pin_block is not None:
        fields[26] = "12"  # PIN capture code: up to 12 digits
    return Message("0200", dict(sorted(fields.items())))


def reversal_request(original: Message, reason: str) -> Message:
    """0400 for ``original`` (same STAN); ``reason`` goes in field 39."""
    if reason not in REVERSAL_REASONS:
        raise ValueError(f"reversal reason must be one of {', '.join(REVERSAL_REASONS)}")
    fields = {n: original.fields[n] for n in _REVERSAL_COPIES if n in original.fields}
    fields[39] = reason
    fields[64] = MAC_PLACEHOLDER
    return Message("0400", dict(sorted(fields.items())))


def response_mti(request_mti: str) -> str:
    """0200 -> 0210, 0800 -> 0810, ...: the response class of a request."""
    if request_mti[2] not in "024":
        raise ValueError(f"MTI {request_mti} is not a request")
    return request_mti[:2] + str(int(request_mti[2]) + 1) + request_mti[3]


def response_to(request: Message, code: str, extra: dict[int, FieldValue] | None = None) -> Message:
    """A response to ``request`` with field 39 = ``code``, echoing what hosts echo, plus ``extra``.

    A MAC placeholder is added when the request had one.
    """
    fields = {n: request.fields[n] for n in _RESPONSE_ECHOES if n in request.fields}
    fields[39] = code
    fields.update(extra or {})
    if 64 in request.fields:
        fields[64] = MAC_PLACEHOLDER
    return Message(response_mti(request.mti), dict(sorted(fields.items())))
