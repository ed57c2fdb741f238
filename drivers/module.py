"""The card (security) module: commands, payload layouts, typed errors and the interface drivers
implement (DESIGN.md section 5). Payload codecs live here once, for drivers and the simulator."""

from __future__ import annotations

import abc
import contextlib
import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")


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
    LOAD_TMK = 0x15


# What the payment app may ask of the module through the agent's module socket (DESIGN.md
# section 5); anything else (loading keys, MACs) is the agent's alone and answered NOT_PERMITTED.
# TUSN is there because an app that builds field 59 A2 itself needs the ciphertext, which only
# the module's TUSN key can make. LOAD_TMK never is: replacing the master key is a remedy the
# agent runs (DESIGN.md section 18), not something a member of the socket's group may do.
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


class KeyFamily(enum.IntEnum):
    """The cipher of a slot's keys, decided by its TMK (DESIGN.md section 18); KEY_STATUS ends
    with it."""

    DES = 0x00  # DES and 3DES
    SM4 = 0x01


class MacAlgorithm(enum.IntEnum):
    CUP_ECB = 0x01  # over the whole MAB
    CUP_ECB_FROM_R = 0x81  # given R, the 8-byte XOR block
    X919 = 0x02  # ANSI X9.19 retail MAC over the MAB
    SM4 = 0x03  # SM4 CUP MAC over the whole MAB
    SM4_FROM_R = 0x83  # given R, the 16-byte XOR block


class PinFormat(enum.IntEnum):
    ISO_FORMAT_0 = 0x00  # under a DES-family PIK, 8 bytes
    SM4 = 0x01  # the format 0 block and 8 bytes 0xFF under an SM4 PIK, 16 bytes


# Which family of slot each algorithm and PIN format needs: a module answers BAD_PARAMETER to
# one of the other family.
MAC_FAMILY = {
    MacAlgorithm.CUP_ECB: KeyFamily.DES,
    MacAlgorithm.CUP_ECB_FROM_R: KeyFamily.DES,
    MacAlgorithm.X919: KeyFamily.DES,
    MacAlgorithm.SM4: KeyFamily.SM4,
    MacAlgorithm.SM4_FROM_R: KeyFamily.SM4,
}
# The keyed step from R by the size of R (8: DES/3DES, 16: SM4): the size says the family.
MAC_FROM_R = {8: MacAlgorithm.CUP_ECB_FROM_R, 16: MacAlgorithm.SM4_FROM_R}


def mac_from_r(r: bytes) -> MacAlgorithm:
    """The algorithm of the keyed step from ``r``, by its size."""
    algorithm = MAC_FROM_R.get(len(r))
    if algorithm is None:
        raise ValueError(f"R is 8 bytes (DES/3DES) or 16 (SM4), got {len(r)}")
    return algorithm


PIN_FORMAT_FAMILY = {PinFormat.ISO_FORMAT_0: KeyFamily.DES, PinFormat.SM4: KeyFamily.SM4}
PIN_BLOCK_BYTES = {PinFormat.ISO_FORMAT_0: 8, PinFormat.SM4: 16}

ENCRYPT_WITH_TDK = 0x03  # ENCRYPT's key byte: the only data key
TMK_CIPHERTEXT_BYTES = 16  # LOAD_TMK: a double-length 3DES or an SM4 TMK under the transport key
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
    """What INFO answers: serial, model, firmware, and whether the module was tampered with."""

    serial: str
    model: str
    firmware: str
    tampered: bool


@dataclass(frozen=True)
class KeyState:
    """One key of a slot as KEY_STATUS reports it: present or not, its length and its KCV."""

    name: str
    present: bool
    length: int
    kcv: bytes

    @property
    def kcv_hex(self) -> str:
        return self.kcv.hex().upper()


@dataclass(frozen=True)
class KeyStatus:
    """KEY_STATUS of one slot: the state of each key, and the slot's key family."""

    slot: int
    keys: dict[str, KeyState]
    family: KeyFamily = KeyFamily.DES

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


_KEY_STATE_BYTES = 2 + KCV_BYTES  # present, length, KCV
# Modules from before SM4 end KEY_STATUS after the TDK; their keys are all DES-family.
KEY_STATUS_BYTES_WITHOUT_FAMILY = _KEY_STATE_BYTES * len(KEY_ORDER)
KEY_STATUS_BYTES = KEY_STATUS_BYTES_WITHOUT_FAMILY + 1


def encode_key_status(status: KeyStatus) -> bytes:
    out = b""
    for name in KEY_ORDER:
        state = status.keys[name]
        out += bytes([int(state.present), state.length]) + state.kcv.ljust(KCV_BYTES, b"\0")
    return out + bytes([status.family])


def decode_key_status(slot: int, data: bytes) -> KeyStatus:
    if len(data) == KEY_STATUS_BYTES_WITHOUT_FAMILY:
        family = KeyFamily.DES
    elif len(data) == KEY_STATUS_BYTES:
        try:
            family = KeyFamily(data[-1])
        except ValueError:
            raise ModuleProtocolError(
                f"KEY_STATUS response names key family 0x{data[-1]:02X}, "
                "expected 0x00 (DES/3DES) or 0x01 (SM4)"
            ) from None
    else:
        raise ModuleProtocolError(
            f"KEY_STATUS response carries {len(data)} data bytes, expected {KEY_STATUS_BYTES} "
            f"({KEY_STATUS_BYTES_WITHOUT_FAMILY} from a module without the family byte)"
        )
    keys = {}
    for i, name in enumerate(KEY_ORDER):
        chunk = data[i * _KEY_STATE_BYTES : (i + 1) * _KEY_STATE_BYTES]
        keys[name] = KeyState(name, bool(chunk[0]), chunk[1], chunk[2:])
    return KeyStatus(slot, keys, family)


def encode_pin_request(
    slot: int, pan12: str, timeout: int, *, format: PinFormat = PinFormat.ISO_FORMAT_0
) -> bytes:
    """PIN_BLOCK's DATA: slot, format, the 12 PAN digits (ASCII), keypad timeout (s)."""
    if len(pan12) != PIN_PAN_DIGITS or not pan12.isdigit():
        raise ValueError("PIN_BLOCK takes the 12 rightmost PAN digits without the check digit")
    if not 1 <= timeout <= 255:
        raise ValueError("a keypad timeout is 1 to 255 seconds")
    return bytes([slot, PinFormat(format)]) + pan12.encode("ascii") + bytes([timeout])


@dataclass(frozen=True)
class TmkLoad:
    """LOAD_TMK's DATA: a master key for ``slot`` as ciphertext under the module's transport
    key (ECB) and the KCV of the clear key (DESIGN.md section 18). Only the module ever decrypts
    it."""

    slot: int
    family: KeyFamily
    ciphertext: bytes = field(repr=False)
    kcv: bytes


def _tmk_load_problem(load: TmkLoad) -> str | None:
    """What makes ``load`` unfit for LOAD_TMK, or None: said before it goes on the line."""
    if not 0 <= load.slot <= 0xFF:
        return f"slot {load.slot} is not a byte"
    if len(load.ciphertext) != TMK_CIPHERTEXT_BYTES:
        return f"TMK ciphertext is {len(load.ciphertext)} bytes, expected {TMK_CIPHERTEXT_BYTES}"
    if len(load.kcv) != KCV_BYTES:
        return f"KCV is {len(load.kcv)} bytes, expected {KCV_BYTES}"
    return None


def encode_load_tmk(load: TmkLoad) -> bytes:
    """LOAD_TMK's DATA: slot 1, family 1, TMK ciphertext 16, KCV 4."""
    problem = _tmk_load_problem(load)
    if problem is not None:
        raise ValueError(f"LOAD_TMK: {problem}")
    return bytes([load.slot, KeyFamily(load.family)]) + load.ciphertext + load.kcv


def decode_load_tmk(data: bytes) -> TmkLoad:
    """LOAD_TMK's DATA as a module reads it; ``ValueError`` (answered BAD_PARAMETER) when it is
    not slot, a known family, 16 bytes of ciphertext and a 4-byte KCV."""
    expected = 2 + TMK_CIPHERTEXT_BYTES + KCV_BYTES
    if len(data) != expected:
        raise ValueError(f"LOAD_TMK carries {len(data)} data bytes, expected {expected}")
    family = KeyFamily(data[1])  # ValueError for an unknown one
    return TmkLoad(data[0], family, data[2:-KCV_BYTES], data[-KCV_BYTES:])


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


def tusn_answer_problem(answer: TusnAnswer) -> str | None:
    """What makes ``answer`` unfit for field 59 A2, or None: one check for encoder, decoder and
    the conformance run (which sees the answers of drivers that decode on their own)."""
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
    problem = tusn_answer_problem(answer)
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
    problem = tusn_answer_problem(answer)
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


@dataclass(frozen=True, kw_only=True)
class ModuleSettings:
    """What a driver is given to reach its module: the ``[module]`` settings that are the
    driver's. A field added later comes with a default, so a driver written today goes on
    working."""

    url: str  # a device, a pyserial URL, or whatever address the driver's SDK understands
    baudrate: int = 115200


class Outcome(Generic[T]):
    """What a command run beside the caller's own work gave (:meth:`CardModule.computing_mac`),
    there once the caller's ``with`` block has ended: its value, or the error it raised."""

    __slots__ = ("_error", "_settled", "_value")

    def __init__(self) -> None:
        self._settled = False
        self._error: Exception | None = None

    def settle(self, compute: Callable[[], T]) -> None:
        try:
            self._value = compute()
        except Exception as exc:  # the caller's to see, from result()
            self._error = exc
        self._settled = True

    def result(self) -> T:
        if not self._settled:
            raise RuntimeError("a command's outcome read before its with block ended")
        if self._error is not None:
            raise self._error
        return self._value


class CardModule(abc.ABC):
    """What the agent needs from a card module. Keys never leave it: it only reports their KCVs,
    loads keys it decrypts itself, and computes MACs."""

    @abc.abstractmethod
    def ping(self) -> int:
        """Module uptime in seconds."""

    @abc.abstractmethod
    def info(self) -> ModuleInfo: ...

    @abc.abstractmethod
    def key_status(self, slot: int = 0) -> KeyStatus:
        """The slot's keys (present, length, KCV) and its family (:class:`KeyFamily`)."""

    @abc.abstractmethod
    def rtc(self) -> datetime:
        """The module's clock (naive, as the module keeps it)."""

    @abc.abstractmethod
    def load_working_keys(self, slot: int, layout: int, field62: bytes) -> None:
        """Hand field 62 of an 0810 and its layout (1-8, DESIGN.md section 4) to the module: it
        stores all keys or none. A layout of the other family than the slot's TMK is
        ``BAD_PARAMETER``."""

    @abc.abstractmethod
    def load_tmk(self, slot: int, family: KeyFamily, ciphertext: bytes, kcv: bytes) -> None:
        """Replace the slot's master key with ``ciphertext`` (16 bytes, ECB under the module's
        transport key), stored only if the clear key's KCV is ``kcv`` (4 bytes); the slot's
        working keys are erased. ``KEY_ABSENT`` without a transport key, ``KCV_MISMATCH`` when
        the KCV differs (DESIGN.md sections 5 and 18)."""

    @abc.abstractmethod
    def mac(self, slot: int, algorithm: MacAlgorithm, data: bytes) -> bytes: ...

    @abc.abstractmethod
    def pin_block(
        self, slot: int, pan12: str, timeout: int, *, format: PinFormat = PinFormat.ISO_FORMAT_0
    ) -> bytes:
        """A PIN read from the module's keypad as an ISO 9564 format 0 block encrypted under the
        slot's PIK: 8 bytes, or 16 for :attr:`PinFormat.SM4` (an SM4 slot's).
        :class:`ModuleStatusError` with ``CANCELLED`` when the cardholder cancels or the keypad
        times out."""

    @abc.abstractmethod
    def encrypt(self, slot: int, data: bytes) -> bytes:
        """``data`` encrypted under the slot's TDK, ECB: a multiple of 8 bytes, of 16 for an
        SM4 slot."""

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
        """The keyed step of the CUP ECB MAC from R: the ``BlockMac`` of :mod:`agent.wire.mac`.
        An 8-byte R is DES/3DES's (``0x81``), a 16-byte one SM4's (``0x83``)."""
        return self.mac(slot, mac_from_r(r), r)

    @contextlib.contextmanager
    def computing_mac(self, r: bytes, slot: int = 0) -> Iterator[Outcome[bytes]]:
        """:meth:`mac_from_block` while the caller's ``with`` block runs, its outcome there once
        the block has ended (whatever happened in it). A driver whose module works on its own,
        as the serial one does, sends the command as the block begins and reads the answer as
        it ends: the block's own waiting (the journal's disk sync) and the module's overlap, on
        one thread. This default computes the MAC once the block has run."""
        outcome: Outcome[bytes] = Outcome()
        yield outcome
        outcome.settle(lambda: self.mac_from_block(r, slot))

    def close(self) -> None:  # noqa: B027 - optional for drivers without resources
        """Release the device."""


# A driver (DESIGN.md section 12): an entry point of group ``pos_agent.modules`` naming a callable
# that takes the settings and returns the module. It must not touch the device: the module is
# reached at its first command, so the service starts with the module unplugged and the driver
# re-opens it after an unplug, as the serial driver does.
DriverFactory = Callable[[ModuleSettings], CardModule]
