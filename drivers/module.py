"""The card (security) module: commands, payload layouts, typed errors and the interface drivers
implement (DESIGN.md section 5). Payload codecs live here once, for drivers and the simulator."""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from datetime import datetime


class Command(enum.IntEnum):
    PING = 0x00
    INFO = 0x01
    KEY_STATUS = 0x02
    RTC = 0x03
    LOAD_WORKING_KEYS = 0x10
    MAC = 0x11
    PIN_BLOCK = 0x12
    ENCRYPT = 0x13
    TUSN = 0x14


# What the payment app may ask of the module through the agent's module socket (DESIGN.md
# section 5); anything else (loading keys, MACs) is the agent's alone and answered NOT_PERMITTED.
# TUSN is there because an app that builds field 59 A2 itself needs the ciphertext, which only
# the module's TUSN key can make.
APP_COMMANDS = frozenset(
    {
        Command.PING,
        Command.INFO,
        Command.KEY_STATUS,
        Command.RTC,
        Command.PIN_BLOCK,
        Command.ENCRYPT,
        Command.TUSN,
    }
)

RESPONSE_BIT = 0x80
KCV_BYTES = 4  # KEY_STATUS reports each key's check value in 4 bytes


class Status(enum.IntEnum):
    OK = 0x00
    UNKNOWN_COMMAND = 0x01
    BAD_PARAMETER = 0x02
    KEY_ABSENT = 0x03
    KCV_MISMATCH = 0x04
    BUSY = 0x05
    TAMPERED = 0x06
    NOT_PERMITTED = 0x07  # module socket only
    CANCELLED = 0x08  # PIN entry cancelled or timed out at the keypad


STATUS_TEXT = {
    Status.OK: "ok",
    Status.UNKNOWN_COMMAND: "unknown command",
    Status.BAD_PARAMETER: "bad parameter",
    Status.KEY_ABSENT: "key absent",
    Status.KCV_MISMATCH: "KCV mismatch",
    Status.BUSY: "busy",
    Status.TAMPERED: "tampered or locked",
    Status.NOT_PERMITTED: "not permitted",
    Status.CANCELLED: "cancelled",
}


class MacAlgorithm(enum.IntEnum):
    CUP_ECB = 0x01  # over the whole MAB
    CUP_ECB_FROM_R = 0x81  # given R, the 8-byte XOR block
    X919 = 0x02  # ANSI X9.19 retail MAC over the MAB


class PinFormat(enum.IntEnum):
    ISO_FORMAT_0 = 0x00


ENCRYPT_WITH_TDK = 0x03  # ENCRYPT's key byte: the only data key
PIN_PAN_DIGITS = 12
# A PIN entry takes as long as the cardholder does: the module answers when the keypad is done,
# and the driver keeps the line free for other commands meanwhile.
PIN_MARGIN = 2.0  # seconds past the keypad timeout before the driver gives up on an answer


# TUSN (DESIGN.md sections 5 and 17): the random factor is the last 6 digits of the PAN; the
# TUSN is field 59 A2's sub-usage 02, ans..50; the ciphertext is 8 upper-case hex characters.
TUSN_FACTOR_DIGITS = 6
TUSN_DEVICE_TYPE_CHARS = 2
TUSN_MAX_CHARS = 50
TUSN_CIPHERTEXT_CHARS = 8
_ASCII_DIGITS = frozenset("0123456789")
_UPPER_HEX = frozenset("0123456789ABCDEF")

# KCV mismatch names the key by number (DATA[1]); KEY_STATUS lists keys in this order.
KEY_NUMBERS = {1: "PIK", 2: "MAK", 3: "TDK"}
KEY_ORDER = ("TMK", "PIK", "MAK", "TDK")
_TEXT_FIELD = 16


# ---------------------------------------------------------------------------------------- errors


class ModuleError(Exception):
    """Anything that went wrong talking to the card module."""


class ModuleLinkError(ModuleError):
    """The serial link failed: no ACK after the retransmits, or the device is gone."""


class ModuleTimeout(ModuleError):
    """The module acknowledged the request but sent no response in time."""


class ModuleProtocolError(ModuleError):
    """The module answered with a response that does not fit the protocol."""


class ModuleStatusError(ModuleError):
    """The module answered with a non-zero status."""

    def __init__(self, command: Command, status: int, key: str | None = None) -> None:
        self.command = command
        self.status = status
        self.key = key
        text = STATUS_TEXT.get(status, "unknown status")
        detail = f" for {key}" if key else ""
        super().__init__(
            f"card module refused {command.name}: {text}{detail} (status {status:02X})"
        )


# ------------------------------------------------------------------------------- payload layouts


@dataclass(frozen=True)
class ModuleInfo:
    serial: str
    model: str
    firmware: str
    tampered: bool


@dataclass(frozen=True)
class KeyState:
    name: str
    present: bool
    length: int
    kcv: bytes

    @property
    def kcv_hex(self) -> str:
        return self.kcv.hex().upper()


@dataclass(frozen=True)
class KeyStatus:
    slot: int
    keys: dict[str, KeyState]

    def __getitem__(self, name: str) -> KeyState:
        return self.keys[name]


def _expect(command: Command, data: bytes, length: int) -> None:
    if len(data) != length:
        raise ModuleProtocolError(
            f"{command.name} response carries {len(data)} data bytes, expected {length}"
        )


def encode_info(info: ModuleInfo) -> bytes:
    fields = (info.serial, info.model, info.firmware)
    return b"".join(f.encode("ascii")[:_TEXT_FIELD].ljust(_TEXT_FIELD) for f in fields) + bytes(
        [int(info.tampered)]
    )


def decode_info(data: bytes) -> ModuleInfo:
    _expect(Command.INFO, data, 3 * _TEXT_FIELD + 1)
    text = [
        data[i : i + _TEXT_FIELD].decode("ascii", "replace").rstrip()
        for i in range(0, 3 * _TEXT_FIELD, _TEXT_FIELD)
    ]
    return ModuleInfo(text[0], text[1], text[2], bool(data[-1]))


def encode_key_status(status: KeyStatus) -> bytes:
    out = b""
    for name in KEY_ORDER:
        state = status.keys[name]
        out += bytes([int(state.present), state.length]) + state.kcv.ljust(KCV_BYTES, b"\0")
    return out


def decode_key_status(slot: int, data: bytes) -> KeyStatus:
    step = 2 + KCV_BYTES
    _expect(Command.KEY_STATUS, data, step * len(KEY_ORDER))
    keys = {}
    for i, name in enumerate(KEY_ORDER):
        chunk = data[i * step : (i + 1) * step]
        keys[name] = KeyState(name, bool(chunk[0]), chunk[1], chunk[2:])
    return KeyStatus(slot, keys)


def encode_pin_request(slot: int, pan12: str, timeout: int) -> bytes:
    """PIN_BLOCK's DATA: slot, format 0, the 12 PAN digits (ASCII), keypad timeout (s)."""
    if len(pan12) != PIN_PAN_DIGITS or not pan12.isdigit():
        raise ValueError("PIN_BLOCK takes the 12 rightmost PAN digits without the check digit")
    if not 1 <= timeout <= 255:
        raise ValueError("a keypad timeout is 1 to 255 seconds")
    return bytes([slot, PinFormat.ISO_FORMAT_0]) + pan12.encode("ascii") + bytes([timeout])


@dataclass(frozen=True)
class TusnAnswer:
    """The module's answer to TUSN: what field 59 usage ``A2`` carries in sub-usages ``01``
    (device type), ``02`` (TUSN) and ``04`` (ciphertext of the TUSN and the random factor)."""

    device_type: str
    tusn: str
    ciphertext: str


def _is_tusn_factor(factor: str) -> bool:
    # not str.isdigit(): it accepts other scripts' digits, which are not ASCII
    return len(factor) == TUSN_FACTOR_DIGITS and set(factor) <= _ASCII_DIGITS


def encode_tusn_request(factor: str) -> bytes:
    """TUSN's DATA: the random factor, 6 ASCII digits (the last 6 of the PAN)."""
    if not _is_tusn_factor(factor):
        raise ValueError(
            f"a TUSN random factor is {TUSN_FACTOR_DIGITS} ASCII digits, got {factor!r}"
        )
    return factor.encode("ascii")


def _tusn_answer_problem(answer: TusnAnswer) -> str | None:
    """What makes ``answer`` unfit for field 59 A2, or None: one check for encoder and decoder."""
    device_type, tusn, ciphertext = answer.device_type, answer.tusn, answer.ciphertext
    if len(device_type) != TUSN_DEVICE_TYPE_CHARS or not set(device_type) <= _ASCII_DIGITS:
        return f"device type {device_type!r} is not {TUSN_DEVICE_TYPE_CHARS} ASCII digits"
    if not 1 <= len(tusn) <= TUSN_MAX_CHARS:
        return f"TUSN is {len(tusn)} characters, expected 1 to {TUSN_MAX_CHARS}"
    if not all(" " <= char <= "~" for char in tusn):  # ans: printable ASCII
        return f"TUSN {tusn!r} is not printable ASCII"
    if len(ciphertext) != TUSN_CIPHERTEXT_CHARS or not set(ciphertext) <= _UPPER_HEX:
        return f"ciphertext {ciphertext!r} is not {TUSN_CIPHERTEXT_CHARS} upper-case hex characters"
    return None


def encode_tusn_answer(answer: TusnAnswer) -> bytes:
    """TUSN's response DATA after the status: device type 2, TUSN length 1, TUSN, ciphertext 8."""
    problem = _tusn_answer_problem(answer)
    if problem is not None:
        raise ValueError(f"TUSN answer: {problem}")
    tusn = answer.tusn.encode("ascii")
    return (
        answer.device_type.encode("ascii")
        + bytes([len(tusn)])
        + tusn
        + answer.ciphertext.encode("ascii")
    )


def _tusn_text(part: str, raw: bytes) -> str:
    # part by part: the length byte between them is binary and may well be above 0x7F
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ModuleProtocolError(
            f"TUSN response: {part} has a non-ASCII byte 0x{raw[exc.start]:02X}"
        ) from None


def decode_tusn_answer(data: bytes) -> TusnAnswer:
    """TUSN's response DATA after the status; :class:`ModuleProtocolError` unless every part is
    as section 5 has it, since a malformed A2 gets the sale refused by the host."""
    head = TUSN_DEVICE_TYPE_CHARS + 1  # device type, TUSN length
    if len(data) < head + TUSN_CIPHERTEXT_CHARS:
        raise ModuleProtocolError(
            f"TUSN response carries {len(data)} data bytes, fewer than the "
            f"{head + TUSN_CIPHERTEXT_CHARS} of device type, TUSN length and ciphertext"
        )
    length = data[TUSN_DEVICE_TYPE_CHARS]
    expected = head + length + TUSN_CIPHERTEXT_CHARS
    if len(data) != expected:
        raise ModuleProtocolError(
            f"TUSN response carries {len(data)} data bytes, expected {expected} "
            f"for a TUSN of {length} characters"
        )
    answer = TusnAnswer(
        device_type=_tusn_text("device type", data[:TUSN_DEVICE_TYPE_CHARS]),
        tusn=_tusn_text("TUSN", data[head : head + length]),
        ciphertext=_tusn_text("ciphertext", data[head + length :]),
    )
    problem = _tusn_answer_problem(answer)
    if problem is not None:
        raise ModuleProtocolError(f"TUSN response: {problem}")
    return answer


def encode_rtc(moment: datetime) -> bytes:
    return bytes.fromhex(moment.strftime("%Y%m%d%H%M%S"))


def decode_rtc(data: bytes) -> datetime:
    _expect(Command.RTC, data, 7)
    digits = data.hex()
    try:
        return datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError:
        raise ModuleProtocolError(f"RTC answer {digits.upper()} is not a valid BCD time") from None


# ------------------------------------------------------------------------------------- interface


class CardModule(abc.ABC):
    """What the agent needs from a card module. Keys never leave it: it only reports their KCVs,
    loads working keys it decrypts itself, and computes MACs."""

    @abc.abstractmethod
    def ping(self) -> int:
        """Module uptime in seconds."""

    @abc.abstractmethod
    def info(self) -> ModuleInfo: ...

    @abc.abstractmethod
    def key_status(self, slot: int = 0) -> KeyStatus: ...

    @abc.abstractmethod
    def rtc(self) -> datetime:
        """The module's clock (naive, as the module keeps it)."""

    @abc.abstractmethod
    def load_working_keys(self, slot: int, layout: int, field62: bytes) -> None:
        """Hand field 62 of an 0810 and its layout (1-7, DESIGN.md section 4) to the module: it
        stores all keys or none."""

    @abc.abstractmethod
    def mac(self, slot: int, algorithm: MacAlgorithm, data: bytes) -> bytes: ...

    @abc.abstractmethod
    def pin_block(self, slot: int, pan12: str, timeout: int) -> bytes:
        """A PIN read from the module's keypad as an ISO 9564 format 0 block encrypted under the
        slot's PIK. :class:`ModuleStatusError` with ``CANCELLED`` when the cardholder cancels or
        the keypad times out."""

    @abc.abstractmethod
    def encrypt(self, slot: int, data: bytes) -> bytes:
        """``data`` (a multiple of 8 bytes) encrypted under the slot's TDK, ECB."""

    @abc.abstractmethod
    def tusn(self, factor: str) -> TusnAnswer:
        """The terminal's device type, TUSN and the ciphertext of the TUSN and ``factor`` (6
        ASCII digits: the last 6 of the PAN) under the TUSN key, which never leaves the module
        (DESIGN.md section 17). ``KEY_ABSENT`` when the manufacturer injected no TUSN key."""

    @abc.abstractmethod
    def forward(self, command: Command, data: bytes) -> bytes:
        """Run one command for someone else (the module socket) and return its response DATA,
        status byte first, whatever the status."""

    def mac_from_block(self, r: bytes, slot: int = 0) -> bytes:
        """The keyed step of the CUP ECB MAC from R: the ``BlockMac`` of :mod:`agent.wire.mac`."""
        return self.mac(slot, MacAlgorithm.CUP_ECB_FROM_R, r)

    def close(self) -> None:  # noqa: B027 - optional for drivers without resources
        """Release the device."""
