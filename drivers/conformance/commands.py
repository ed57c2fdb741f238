"""The cases of the module's commands (DESIGN.md section 5), run through the driver's
:class:`~drivers.module.CardModule`. They share what earlier ones found: each slot's KEY_STATUS,
which slots hold a documented test TMK, which have the known working keys loaded, the TUSN."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from drivers.conformance.case import Failed, Skipped, expect, hex_of
from drivers.conformance.vectors import (
    ENCRYPT_DATA,
    KNOWN_ANSWERS,
    MAB,
    PIN,
    PIN_PAN,
    PIN_TIMEOUT,
    TEST_TUSN_KEY,
    TUSN_FACTOR,
    KnownAnswers,
)
from drivers.module import (
    KEY_ORDER,
    PIN_BLOCK_BYTES,
    CardModule,
    KeyFamily,
    KeyState,
    KeyStatus,
    ModuleInfo,
    ModuleStatusError,
    PinFormat,
    Status,
    TusnAnswer,
    tusn_answer_problem,
)

_TEXT_CHARS = 16  # INFO's serial, model and firmware fields
_KEY_LENGTHS = {KeyFamily.DES: (8, 16, 24), KeyFamily.SM4: (16,)}
_PIN_FORMAT = {KeyFamily.DES: PinFormat.ISO_FORMAT_0, KeyFamily.SM4: PinFormat.SM4}
# section 17: the TUSN is the manufacturer's number (6 digits), the device type (2), the serial
_MANUFACTURER_DIGITS = 6
# What computes the expected TUSN ciphertext: (TUSN key, TUSN, random factor) -> 8 hex characters.
TusnCiphertext = Callable[[bytes, str, str], str]


@dataclass(frozen=True)
class KeyOptions:
    """What the key cases may do: ``test_keys`` requires the documented test TMK (its absence
    fails instead of skipping), ``pin`` tells the person at the keypad what to type (None: no one
    is there), ``tusn_ciphertext`` computes the expected TUSN ciphertext (None: no SM4 here)."""

    test_keys: bool = False
    pin: Callable[[str], None] | None = None
    tusn_ciphertext: TusnCiphertext | None = None


def _state(state: KeyState) -> str:
    if not state.present:
        return "absent"
    return f"present, {state.length} bytes, KCV {state.kcv_hex}"


def _text_problem(field: str, text: object) -> str | None:
    if not isinstance(text, str):
        return f"{field} is {type(text).__name__}, not text"
    if len(text) > _TEXT_CHARS or not all(" " <= char <= "~" for char in text):
        return f"{field} {text!r} is not up to {_TEXT_CHARS} printable ASCII characters"
    return None


class CommandCases:
    def __init__(self, module: CardModule, options: KeyOptions) -> None:
        self.module = module
        self.options = options
        self.module_info: ModuleInfo | None = None
        self.statuses: dict[int, KeyStatus] = {}
        self.test_slots: dict[int, KnownAnswers] = {}  # slots holding a documented test TMK
        self.loaded: set[int] = set()  # slots holding the known working keys
        self.tusn_answer: TusnAnswer | None = None

    def family(self, slot: int) -> KeyFamily | None:
        status = self.statuses.get(slot)
        return status.family if status is not None else None

    # ------------------------------------------------------------------- status commands

    def ping(self) -> str:
        uptime = self.module.ping()
        expect(
            isinstance(uptime, int) and 0 <= uptime < 2**32,
            f"uptime {uptime!r} is not 4 bytes of seconds",
        )
        return f"uptime {uptime} s"

    def info(self) -> str:
        info = self.module.info()
        expect(isinstance(info, ModuleInfo), f"INFO gave {type(info).__name__}, not ModuleInfo")
        for field in ("serial", "model", "firmware"):
            problem = _text_problem(field, getattr(info, field))
            expect(problem is None, str(problem))
        expect(bool(info.serial), "the serial is empty: TMS and fleet know a terminal by it")
        expect(isinstance(info.tampered, bool), f"tamper flag {info.tampered!r} is not a flag")
        self.module_info = info
        tamper = "; TAMPER FLAG SET: key commands answer 06" if info.tampered else ""
        return f"serial {info.serial!r}, model {info.model!r}, firmware {info.firmware!r}{tamper}"

    def rtc(self) -> str:
        clock = self.module.rtc()
        expect(isinstance(clock, datetime), f"RTC gave {type(clock).__name__}, not a time")
        offset = (clock - datetime.now()).total_seconds()
        return f"module clock {clock:%Y-%m-%d %H:%M:%S}, {offset:+.0f} s from this machine's"

    def key_status(self, slot: int, *, optional: bool = False) -> str:
        try:
            status = self.module.key_status(slot)
        except ModuleStatusError as error:
            if optional and error.status == Status.BAD_PARAMETER:
                raise Skipped(f"the module has no slot {slot} ({error})") from None
            raise
        expect(isinstance(status, KeyStatus), f"gave {type(status).__name__}, not KeyStatus")
        expect(status.slot == slot, f"the answer is for slot {status.slot}, not {slot}")
        expect(
            sorted(status.keys) == sorted(KEY_ORDER),
            f"the answer names keys {sorted(status.keys)}, expected {', '.join(KEY_ORDER)}",
        )
        expect(
            isinstance(status.family, KeyFamily),
            f"family {status.family!r} is not 0x00 (DES/3DES) or 0x01 (SM4)",
        )
        for name in KEY_ORDER:
            state = status[name]
            if state.present:
                expect(
                    state.length in _KEY_LENGTHS[status.family],
                    f"{name} is {state.length} bytes long: a {status.family.name} key is "
                    f"{' or '.join(map(str, _KEY_LENGTHS[status.family]))}",
                )
                expect(len(state.kcv) == 4, f"{name}'s KCV is {len(state.kcv)} bytes, not 4")
        self._family_fits_tmk(slot, status)
        self.statuses[slot] = status
        keys = "; ".join(f"{name} {_state(status[name])}" for name in KEY_ORDER)
        return f"family {status.family.name} (0x{status.family:02X}); {keys}"

    @staticmethod
    def _family_fits_tmk(slot: int, status: KeyStatus) -> None:
        """A TMK whose KCV is the other family's test KCV is a family byte that lies: a KCV is
        computed with the family's cipher, so the two cannot both be right."""
        tmk = status["TMK"]
        for family, answers in KNOWN_ANSWERS.items():
            if tmk.present and tmk.kcv == answers.tmk_kcv and family is not status.family:
                raise Failed(
                    f"slot {slot}'s TMK has KCV {tmk.kcv_hex}, the documented {family.name} test "
                    f"TMK's, but the family byte says {status.family.name} "
                    f"(0x{status.family:02X}); expected 0x{family:02X}"
                )

    # ----------------------------------------------------------------------- the test keys

    def _status(self, slot: int) -> KeyStatus:
        status = self.statuses.get(slot)
        if status is None:
            raise Skipped(f"needs the answer of KEY_STATUS slot {slot}, which failed")
        return status

    def _not_test_key(self, why: str) -> Exception:
        if self.options.test_keys:
            return Failed(f"{why}; --test-keys expects the documented test TMK")
        return Skipped(
            f"{why}: the cases that load keys run only under the documented test TMK, and leave "
            "this slot alone (--test-keys makes this a failure)"
        )

    def test_tmk(self, slot: int) -> str:
        status = self._status(slot)
        tmk, answers = status["TMK"], KNOWN_ANSWERS[status.family]
        if not tmk.present:
            raise self._not_test_key(f"slot {slot} holds no TMK")
        if tmk.kcv != answers.tmk_kcv:
            raise self._not_test_key(
                f"slot {slot}'s {status.family.name} TMK has KCV {tmk.kcv_hex}, not the "
                f"documented test TMK's {hex_of(answers.tmk_kcv)}"
            )
        self.test_slots[slot] = answers
        return f"the documented {status.family.name} test TMK (KCV {hex_of(answers.tmk_kcv)})"

    def _answers(self, slot: int) -> KnownAnswers:
        answers = self.test_slots.get(slot)
        if answers is None:
            raise Skipped(f"slot {slot} holds no documented test TMK (see test TMK slot {slot})")
        return answers

    def _loaded(self, slot: int) -> KnownAnswers:
        answers = self._answers(slot)
        if slot not in self.loaded:
            raise Skipped(
                f"needs the known working keys, which LOAD_WORKING_KEYS slot {slot} did not load"
            )
        return answers

    def wrong_family(self, slot: int) -> str:
        answers = self._answers(slot)
        other = next(a for family, a in KNOWN_ANSWERS.items() if family is not answers.family)
        try:
            self.module.load_working_keys(slot, other.layout, other.field62)
        except ModuleStatusError as error:
            expect(
                error.status == Status.BAD_PARAMETER,
                f"{error}; expected bad parameter (status 02) for a layout of the other family",
            )
            return f"layout {other.layout} ({other.family.name} keys) refused: bad parameter (02)"
        raise Failed(
            f"layout {other.layout} ({other.family.name} keys) was stored in a "
            f"{answers.family.name} slot; expected bad parameter (status 02)"
        )

    def load_working_keys(self, slot: int) -> str:
        answers = self._answers(slot)
        self.module.load_working_keys(slot, answers.layout, answers.field62)
        status = self.module.key_status(slot)
        for name, kcv in answers.kcvs.items():
            state = status[name]
            expect(
                state.present and state.kcv == kcv,
                f"after the load KEY_STATUS reports {name} {_state(state)}; expected present "
                f"with KCV {hex_of(kcv)}",
            )
        self.loaded.add(slot)
        kcvs = ", ".join(f"{name} {hex_of(kcv)}" for name, kcv in answers.kcvs.items())
        return f"layout {answers.layout} stored; KEY_STATUS reports {kcvs}"

    def kcv_mismatch(self, slot: int) -> str:
        answers = self._loaded(slot)
        wrong = answers.field62_with_wrong_mak_kcv()
        try:
            self.module.load_working_keys(slot, answers.layout, wrong)
        except ModuleStatusError as error:
            expect(
                error.status == Status.KCV_MISMATCH and error.key == "MAK",
                f"{error}; expected KCV mismatch (status 04) for MAK (DATA[1] = 2)",
            )
        else:
            raise Failed("a field 62 whose MAK KCV is wrong was stored; expected status 04")
        pik = self.module.key_status(slot)["PIK"]
        expect(
            pik.present and pik.kcv == answers.kcvs["PIK"],
            f"after the refused load the PIK is {_state(pik)}, not the one loaded before "
            f"(KCV {hex_of(answers.kcvs['PIK'])}): a module stores all keys or none",
        )
        return "refused with KCV mismatch (04) for MAK; the keys loaded before stayed"

    # ------------------------------------------------------------------- working-key commands

    def mac(self, slot: int, *, from_r: bool) -> str:
        answers = self._loaded(slot)
        algorithm = answers.mac_from_r if from_r else answers.mac_over_mab
        data = answers.r if from_r else MAB
        mac = self.module.mac(slot, algorithm, data)
        what = f"R {hex_of(data)}" if from_r else f"the {len(MAB)}-byte MAB"
        expect(
            mac == answers.mac,
            f"MAC 0x{algorithm:02X} of {what} is {mac!r}; expected {answers.mac!r} "
            f"(MAK KCV {hex_of(answers.kcvs['MAK'])})",
        )
        return f"{answers.mac.decode()} of {what}"

    def encrypt(self, slot: int) -> str:
        answers = self._loaded(slot)
        ciphertext = self.module.encrypt(slot, ENCRYPT_DATA)
        expect(
            ciphertext == answers.encrypted,
            f"ENCRYPT of {hex_of(ENCRYPT_DATA)} gave {ciphertext!r}; expected "
            f"{hex_of(answers.encrypted)} (TDK KCV {hex_of(answers.kcvs['TDK'])})",
        )
        return f"{hex_of(ENCRYPT_DATA)} under the TDK is {hex_of(ciphertext)}"

    def pin_entry(self, slot: int) -> str:
        if self.options.pin is None:
            raise Skipped(f"needs a person at the module's keypad: run with --pin and type {PIN}")
        status = self._status(slot)
        answers = self.test_slots.get(slot)
        if answers is not None:
            self._loaded(slot)
        elif not status["PIK"].present:
            raise Skipped(f"slot {slot} holds no PIK")
        pin_format = _PIN_FORMAT[status.family]
        self.options.pin(
            f"PIN entry, slot {slot}: type {PIN} on the module's keypad and confirm, within "
            f"{PIN_TIMEOUT} s"
        )
        block = self.module.pin_block(slot, PIN_PAN, PIN_TIMEOUT, format=pin_format)
        size = PIN_BLOCK_BYTES[pin_format]
        expect(
            isinstance(block, bytes) and len(block) == size,
            f"PIN block {block!r} is not {size} bytes",
        )
        if answers is None:
            return f"a {size}-byte block under the slot's own PIK, unknown to the check"
        expect(
            block == answers.pin_block,
            f"PIN block {hex_of(block)}; expected {hex_of(answers.pin_block)}: the PIN typed was "
            f"not {PIN}, or the block is not format 0 of PAN digits {PIN_PAN} under the PIK",
        )
        return f"PIN {PIN} at PAN digits {PIN_PAN}: {hex_of(block)}"

    # ----------------------------------------------------------------------------- TUSN

    def tusn(self) -> str:
        try:
            answer = self.module.tusn(TUSN_FACTOR)
        except ModuleStatusError as error:
            if error.status in (Status.KEY_ABSENT, Status.UNKNOWN_COMMAND):
                raise Skipped(
                    f"{error}: the module makes no TUSN ciphertext, so registration.tusn = "
                    '"module" cannot work with it'
                ) from None
            raise
        expect(isinstance(answer, TusnAnswer), f"gave {type(answer).__name__}, not TusnAnswer")
        problem = tusn_answer_problem(answer)
        expect(problem is None, str(problem))
        type_at = slice(_MANUFACTURER_DIGITS, _MANUFACTURER_DIGITS + len(answer.device_type))
        expect(
            answer.tusn[: type_at.stop].isdigit() and answer.tusn[type_at] == answer.device_type,
            f"TUSN {answer.tusn!r} does not start with a 6-digit manufacturer number and the "
            f"device type {answer.device_type!r} (section 17)",
        )
        self.tusn_answer = answer
        return (
            f"device type {answer.device_type}, TUSN {answer.tusn!r}, ciphertext "
            f"{answer.ciphertext} for factor {TUSN_FACTOR}"
        )

    def tusn_ciphertext(self) -> str:
        answer = self.tusn_answer
        if answer is None:
            raise Skipped("needs the answer of the TUSN case, which did not pass")
        if not self.test_slots and not self.options.test_keys:
            raise Skipped("the module holds no documented test TMK, so no test TUSN key either")
        if self.options.tusn_ciphertext is None:
            raise Skipped(
                "computing the expected ciphertext needs SM4 in software, which this machine "
                "lacks (pip install 'pos-agent[sim]')"
            )
        expected = self.options.tusn_ciphertext(TEST_TUSN_KEY, answer.tusn, TUSN_FACTOR)
        expect(
            answer.ciphertext == expected,
            f"ciphertext {answer.ciphertext} of TUSN {answer.tusn!r} and factor {TUSN_FACTOR}; "
            f"expected {expected} under the documented test TUSN key",
        )
        return f"{expected} under the documented test TUSN key"
