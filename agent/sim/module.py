"""A simulated card module that speaks DESIGN.md section 5, for tests, demos and bench work.

Its keys live in a JSON state file (mode 0600) created on first start with the documented test
keys (DESIGN.md section 5): a DES TMK in slot 0, an SM4 TMK in slot 1, the TUSN key and the
transport key. It is test equipment: never put a production key in it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from agent.wire.errors import WireError
from agent.wire.mac import (
    DES_FAMILY,
    SM4_FAMILY,
    CipherFamily,
    DesKey,
    tusn_ciphertext,
    x919_mac,
)
from agent.wire.pin import format0
from agent.wire.working_keys import LAYOUTS, parse_field62
from drivers.framing import Frame
from drivers.module import (
    ENCRYPT_WITH_TDK,
    KEY_ORDER,
    MAC_FAMILY,
    MAC_FROM_R,
    PIN_FORMAT_FAMILY,
    PIN_PAN_DIGITS,
    RESPONSE_BIT,
    TUSN_FACTOR_DIGITS,
    Command,
    KeyFamily,
    KeyState,
    KeyStatus,
    MacAlgorithm,
    ModuleInfo,
    PinFormat,
    Status,
    TusnAnswer,
    decode_load_tmk,
    encode_info,
    encode_key_status,
    encode_rtc,
    encode_tusn_answer,
)

# The documented test TMKs of every new simulator state: slot 0 a DES TMK (KCV 08D7B4FB), slot 1
# an SM4 TMK. Their digits are the same, but each slot's family decides the cipher.
TEST_TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TEST_SM4_TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
SM4_SLOT = 1
# The documented test TUSN key (SM4, DESIGN.md section 5), which independent test hosts use to
# check field 59 A2, and the TUSN: manufacturer 000099, device type 02, then the serial.
TEST_TUSN_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
# The documented transport key (3DES) that LOAD_TMK's ciphertexts are under (section 18).
TEST_TRANSPORT_KEY = bytes.fromhex("1A2B3C4D5E6F70811A2B3C4D5E6F7081")
TUSN_DEVICE_TYPE = "02"  # traditional POS
TUSN_PREFIX = "000099" + TUSN_DEVICE_TYPE
SLOTS = 16
_KEY_NUMBER = {"PIK": 1, "MAK": 2, "TDK": 3}
_CIPHERS: dict[KeyFamily, CipherFamily] = {KeyFamily.DES: DES_FAMILY, KeyFamily.SM4: SM4_FAMILY}
TEST_PIN = "123456"


def _test_slots() -> dict[int, dict[str, bytes]]:
    return {0: {"TMK": TEST_TMK}, SM4_SLOT: {"TMK": TEST_SM4_TMK}}


def _test_families() -> dict[int, KeyFamily]:
    return {0: KeyFamily.DES, SM4_SLOT: KeyFamily.SM4}


def _optional_key(raw: dict[str, object], name: str, default: bytes, kind: str) -> bytes | None:
    """A key of the state file that may be null (the manufacturer injected none); a file from
    before it has the documented one. Its length is checked now, not inside the first request."""
    text = raw.get(name, default.hex())
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"{name} is not hex")
    key = bytes.fromhex(text)
    if len(key) != len(default):
        raise ValueError(f"{name} is {len(key)} bytes, {kind} {len(default)}")
    return key


@dataclass
class Keypad:
    """The simulator's PIN pad: what the next cardholder types (``pin DIGITS`` on the console,
    or ``pin cancel``), and how long they take (``keypad SECONDS``)."""

    pin: str = TEST_PIN  # "" : the cardholder presses cancel
    delay: float = 0.0
    entries: int = 0  # PIN entries begun

    def set(self, text: str) -> None:
        if text == "cancel":
            self.pin = ""
        elif text.isdigit() and 4 <= len(text) <= 12:
            self.pin = text
        else:
            raise ValueError(f"a PIN is 4 to 12 digits (or 'cancel'), got {text!r}")


@dataclass
class ModuleState:
    """What the module keeps across restarts: identity, keys and family per slot, the TUSN key
    (None: the manufacturer injected none, and TUSN answers KEY_ABSENT) and the transport key
    (None: LOAD_TMK answers KEY_ABSENT)."""

    path: Path | None
    serial: str = "SIM0000000000001"
    model: str = "POS-SIM-SM1"
    firmware: str = "sim-1.0"
    slots: dict[int, dict[str, bytes]] = field(default_factory=_test_slots)
    tusn_key: bytes | None = TEST_TUSN_KEY
    families: dict[int, KeyFamily] = field(default_factory=_test_families)
    transport_key: bytes | None = TEST_TRANSPORT_KEY

    def family(self, slot: int) -> KeyFamily:
        """The slot's family: its TMK's (DES for a slot that never had one)."""
        return self.families.get(slot, KeyFamily.DES)

    @property
    def tusn(self) -> str:
        """The terminal's TUSN: the prefix and the serial without the padding INFO gives it."""
        return TUSN_PREFIX + self.serial.strip()

    @classmethod
    def load_or_create(cls, path: Path) -> ModuleState:
        if not path.exists():
            state = cls(path)
            state.save()
            return state
        try:
            raw = json.loads(path.read_text())
            slots = {
                int(slot): {name: bytes.fromhex(value) for name, value in keys.items()}
                for slot, keys in raw["slots"].items()
            }
            if "families" in raw:
                families = {
                    int(slot): KeyFamily[name] for slot, name in raw["families"].items()
                }  # KeyError for an unknown family
            else:
                # a state file from before SM4: its keys are all DES, and it gets the
                # documented SM4 slot unless it already uses that slot
                families = dict.fromkeys(slots, KeyFamily.DES)
                if SM4_SLOT not in slots:
                    slots[SM4_SLOT] = {"TMK": TEST_SM4_TMK}
                    families[SM4_SLOT] = KeyFamily.SM4
            return cls(
                path,
                serial=raw["serial"],
                model=raw["model"],
                firmware=raw["firmware"],
                slots=slots,
                tusn_key=_optional_key(raw, "tusn_key", TEST_TUSN_KEY, "an SM4 key"),
                families=families,
                transport_key=_optional_key(
                    raw, "transport_key", TEST_TRANSPORT_KEY, "a double-length 3DES key"
                ),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"module simulator state {path} is unreadable: {exc}") from None

    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "serial": self.serial,
            "model": self.model,
            "firmware": self.firmware,
            "slots": {
                str(slot): {name: key.hex().upper() for name, key in keys.items()}
                for slot, keys in self.slots.items()
            },
            "families": {str(slot): family.name for slot, family in self.families.items()},
            "tusn_key": _hex_or_none(self.tusn_key),
            "transport_key": _hex_or_none(self.transport_key),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
        os.replace(temporary, self.path)


def _hex_or_none(key: bytes | None) -> str | None:
    return key.hex().upper() if key is not None else None


class ModuleSimulator:
    """Executes module commands. No I/O: :class:`agent.sim.module_port.SimulatedModulePort` runs
    it on a line. Faults that are not about the line live here: busy answers and the tamper
    flag."""

    def __init__(self, state: ModuleState, *, clock_offset: float = 0.0) -> None:
        self.state = state
        self.clock_offset = clock_offset
        self.busy_answers = 0
        self.tampered = False
        self.executed = 0
        self.keypad = Keypad()
        self._started = time.monotonic()
        self._last: tuple[Frame, Frame] | None = None

    def handle(self, request: Frame) -> Frame:
        """The response to ``request``; a repeated request (same SEQ, command and data) is answered
        from the last response, never executed twice."""
        if self._last is not None and self._last[0] == request:
            return self._last[1]
        response = Frame(request.seq, request.cmd | RESPONSE_BIT, self._execute(request))
        self._last = (request, response)
        return response

    def _execute(self, request: Frame) -> bytes:
        if self.busy_answers > 0:
            self.busy_answers -= 1
            return bytes([Status.BUSY])
        try:
            command = Command(request.cmd)
        except ValueError:
            return bytes([Status.UNKNOWN_COMMAND])
        self.executed += 1
        handler = {
            Command.PING: self._ping,
            Command.INFO: self._info,
            Command.KEY_STATUS: self._key_status,
            Command.RTC: self._rtc,
            Command.LOAD_WORKING_KEYS: self._load_working_keys,
            Command.MAC: self._mac,
            Command.PIN_BLOCK: self._pin_block,
            Command.ENCRYPT: self._encrypt,
            Command.TUSN: self._tusn,
            Command.LOAD_TMK: self._load_tmk,
        }[command]
        if self.tampered and command not in (Command.PING, Command.INFO, Command.RTC):
            return bytes([Status.TAMPERED])
        return handler(request.data)

    @staticmethod
    def _ok(data: bytes = b"") -> bytes:
        return bytes([Status.OK]) + data

    def _slot(self, data: bytes) -> int | None:
        return data[0] if data and data[0] < SLOTS else None

    def _ping(self, data: bytes) -> bytes:
        return self._ok(int(time.monotonic() - self._started).to_bytes(4, "big"))

    def _info(self, data: bytes) -> bytes:
        info = ModuleInfo(self.state.serial, self.state.model, self.state.firmware, self.tampered)
        return self._ok(encode_info(info))

    def _rtc(self, data: bytes) -> bytes:
        return self._ok(encode_rtc(datetime.now() + timedelta(seconds=self.clock_offset)))

    def _cipher(self, slot: int) -> CipherFamily:
        return _CIPHERS[self.state.family(slot)]

    def _key_status(self, data: bytes) -> bytes:
        slot = self._slot(data)
        if slot is None or len(data) != 1:
            return bytes([Status.BAD_PARAMETER])
        keys = self.state.slots.get(slot, {})
        cipher = self._cipher(slot)
        states = {}
        for name in KEY_ORDER:
            key = keys.get(name)
            states[name] = KeyState(
                name, key is not None, len(key) if key else 0, cipher.kcv(key) if key else b""
            )
        return self._ok(encode_key_status(KeyStatus(slot, states, self.state.family(slot))))

    def _load_working_keys(self, data: bytes) -> bytes:
        """slot, layout, field 62: an 8-byte key is stored as single DES, and MACs with DES.
        The layout's keys must be of the slot's family (layout 8: SM4)."""
        slot = self._slot(data)
        layout = LAYOUTS.get(data[1]) if len(data) > 1 else None
        if slot is None or layout is None:
            return bytes([Status.BAD_PARAMETER])
        tmk = self.state.slots.get(slot, {}).get("TMK")
        if tmk is None:  # before the family check: a slot without a TMK has no family
            return bytes([Status.KEY_ABSENT])
        if layout.sm4 != (self.state.family(slot) is KeyFamily.SM4):
            return bytes([Status.BAD_PARAMETER])
        try:
            issued = parse_field62(data[2:], layout.scheme, layout.number)
        except WireError:
            return bytes([Status.BAD_PARAMETER])
        cipher = self._cipher(slot)
        decrypt = cipher.cipher(tmk).decrypt  # ECB: each block of a key on its own
        clear = {}
        for key in issued.keys:
            value = decrypt(key.ciphertext)
            if cipher.kcv(value) != key.kcv:
                return bytes([Status.KCV_MISMATCH, _KEY_NUMBER[key.name]])
            clear[key.name] = value
        keys = self.state.slots[slot]
        for name in ("PIK", "MAK", "TDK"):
            keys.pop(name, None)
        keys.update(clear)
        self.state.save()
        return self._ok()

    def _mac(self, data: bytes) -> bytes:
        """slot, algorithm, MAB or R: the algorithm must be of the slot's family, and R the
        size of its cipher's block."""
        slot = self._slot(data)
        if slot is None or len(data) < 2 or data[1] not in MAC_FAMILY:
            return bytes([Status.BAD_PARAMETER])
        algorithm, payload = MacAlgorithm(data[1]), data[2:]
        cipher = self._cipher(slot)
        if MAC_FAMILY[algorithm] is not self.state.family(slot):
            return bytes([Status.BAD_PARAMETER])
        from_r = algorithm in MAC_FROM_R.values()
        if from_r and len(payload) != cipher.block:
            return bytes([Status.BAD_PARAMETER])
        mak = self.state.slots.get(slot, {}).get("MAK")
        if mak is None:
            return bytes([Status.KEY_ABSENT])
        if algorithm is MacAlgorithm.X919:
            return self._ok(x919_mac(payload, mak))
        return self._ok(cipher.mac_from_r(payload, mak) if from_r else cipher.mac(payload, mak))

    def begin(self, request: Frame) -> float:
        """A request has arrived: how long the module works on it before answering. A PIN entry
        (counted now) takes the keypad's delay, at most its own timeout (then it is answered
        CANCELLED)."""
        if request.cmd != Command.PIN_BLOCK or len(request.data) < 2:
            return 0.0
        self.keypad.entries += 1
        return min(self.keypad.delay, float(request.data[-1]))

    def _pin_block(self, data: bytes) -> bytes:
        """slot, format, 12 PAN digits, timeout: the keypad's PIN in format 0 under the PIK,
        padded with 0xFF to the cipher's block (format 0x01: SM4, 16 bytes). The format must be
        of the slot's family."""
        slot = self._slot(data)
        if (
            slot is None
            or len(data) != 3 + PIN_PAN_DIGITS
            or data[1] not in PIN_FORMAT_FAMILY
            or PIN_FORMAT_FAMILY[PinFormat(data[1])] is not self.state.family(slot)
            or not data[2:-1].isdigit()
            or data[-1] == 0
        ):
            return bytes([Status.BAD_PARAMETER])
        pik = self.state.slots.get(slot, {}).get("PIK")
        if pik is None:
            return bytes([Status.KEY_ABSENT])
        if not self.keypad.pin or self.keypad.delay > data[-1]:
            return bytes([Status.CANCELLED])
        cipher = self._cipher(slot)
        block = format0(self.keypad.pin, data[2:-1].decode()).ljust(cipher.block, b"\xff")
        return self._ok(cipher.cipher(pik).encrypt(block))

    def _encrypt(self, data: bytes) -> bytes:
        slot = self._slot(data)
        payload = data[2:]
        if slot is None or len(data) < 2 or data[1] != ENCRYPT_WITH_TDK:
            return bytes([Status.BAD_PARAMETER])
        cipher = self._cipher(slot)
        if not payload or len(payload) % cipher.block:
            return bytes([Status.BAD_PARAMETER])
        tdk = self.state.slots.get(slot, {}).get("TDK")
        if tdk is None:
            return bytes([Status.KEY_ABSENT])
        return self._ok(cipher.cipher(tdk).encrypt(payload))  # ECB: block by block

    def _load_tmk(self, data: bytes) -> bytes:
        """slot, family, TMK under the transport key (3DES ECB), KCV of the clear TMK: stored
        with its family if the KCV matches, the slot's working keys erased with the old TMK
        (DESIGN.md section 18). The clear key is never logged or answered."""
        try:
            load = decode_load_tmk(data)
        except ValueError:
            return bytes([Status.BAD_PARAMETER])
        if load.slot >= SLOTS:
            return bytes([Status.BAD_PARAMETER])
        transport = self.state.transport_key
        if transport is None:
            return bytes([Status.KEY_ABSENT])
        tmk = DesKey(transport).decrypt(load.ciphertext)
        if _CIPHERS[load.family].kcv(tmk) != load.kcv:
            return bytes([Status.KCV_MISMATCH])
        self.state.slots[load.slot] = {"TMK": tmk}
        self.state.families[load.slot] = load.family
        self.state.save()
        return self._ok()

    def _tusn(self, data: bytes) -> bytes:
        """random factor (6 ASCII digits): device type, TUSN, and the ciphertext of TUSN and
        factor under the TUSN key (DESIGN.md section 17)."""
        # bytes.isdigit() is ASCII digits only
        if len(data) != TUSN_FACTOR_DIGITS or not data.isdigit():
            return bytes([Status.BAD_PARAMETER])
        key = self.state.tusn_key
        if key is None:
            return bytes([Status.KEY_ABSENT])
        tusn = self.state.tusn
        ciphertext = tusn_ciphertext(key, tusn, data.decode("ascii"))
        return self._ok(encode_tusn_answer(TusnAnswer(TUSN_DEVICE_TYPE, tusn, ciphertext)))
