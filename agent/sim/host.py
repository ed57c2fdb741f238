"""An acquirer host that speaks DESIGN.md section 4, for tests and the demo.

Its terminal registry (TID, MID, TMK, status) is a JSON file it can reload. It issues working keys
under each terminal's TMK at sign-in, checks every request MAC (A0 on a mismatch), answers 97 for an
unknown or cancelled TID and for a terminal with no session, and 03 for a MID that does not match.
It keeps a ledger of approved purchases and reversals so tests can count lost and duplicated
transactions.

Like real hosts, it can lay out the sign-in's field 62 in any of the seven layouts of DESIGN.md
section 4 (``key_layout``; the scheme's full-length layout by default), it hands out its batch
number in 60.2 of the 0810, and with ``check_batch`` it answers 77 to a purchase of another batch.
It decodes and encodes under a wire profile (the built-in CUP one by default).

It offers the remote master-key download of DESIGN.md section 18: an 0800 with 60.3 = 401 is
answered with the terminal's TMK (its registry entry's, which may differ from the module's) under
``transport_key`` (the module simulator's documented one) and the TMK's KCV in field 62; with
``tmk_in_signin`` the same 20 bytes go, as tag 00 (one byte 0x00 first), before the working keys
in field 62 of every sign-in's 0810. The KCV is of the terminal's key family (its registry entry's
``family``, ``DES`` unless it says ``SM4``): an SM4 TMK's KCV is SM4's (section 4).

It accepts the sign-in schemes (60.3) of ``accepted_schemes``, every scheme it can issue keys for
(``SCHEMES``) by default, and answers a sign-in of any other with 40, as a posp_server-style host
that lists only 004 and 006 does (DESIGN.md section 4); a listed scheme it cannot issue keys for
gets 30. ``signin_schemes`` in :meth:`AcquirerHost.state` is the 60.3 of each sign-in of a
registered terminal, in the order received.

Every request of an MTI that DESIGN.md section 15 MACs (0100, 0200, 0220, 0400, 0620) must carry a
good MAC: A0 otherwise, counted as a missing or a failed MAC. Decision rules for the money-moving
ones (0100, 0200, 0220; documented so tests can aim at them): an amount whose last two digits are
51 is declined with 51 (insufficient funds); a PIN block (field 52) is decrypted under the PIK the
host issued and checked as ISO 9564 format 0 against the card's PIN (the module simulator's test
PIN for every card unless ``pins`` says otherwise): 55 for a wrong PIN, 99 for a block that is not
format 0 for the card's PAN; everything else is approved. An SM4 session (scheme 006, layout 8)
MACs with SM4 on 16-byte blocks, and its PIN block is SM4's (section 4): 16 bytes in 59 usage
``A1`` (or in 62 when the request has no ``A1``), format 0 followed by 8 bytes 0xFF under the
PIK, with 52 = 8 zero bytes and 53 = 23 and 14 zeros; anything else is 99. Settlement, batch upload
and script results are acknowledged with 00. A reversal of nothing
the host approved gets 25; one whose amount differs from the original's gets 22.

With ``check_tusn`` it checks field 59 ``A2`` as an acquirer does under the CUP rules of 2017
(DESIGN.md section 17): every purchase (0200, 3 = 00..., 25 = 00, 60.1 = 22) and
pre-authorisation (0100, 3 = 03..., 25 = 06, 60.1 = 10) must carry a well-formed ``A2`` whose TUSN
the acquirer reported to CUP for that terminal (``tusns`` in the registry), whose random factor is
the last 6 digits of the PAN (field 2, else field 35 before ``=``) and whose ciphertext is right
under ``tusn_key`` (the module simulator's documented test key by default). Anything else is
refused with ``tusn_refusal`` (97 by default): a decline that moves no money, counted by reason
(``TUSN_REFUSAL_REASONS``), after the MAC and batch checks. Nothing else is checked: sign-ins,
echoes, balance inquiries, voids and reversals carry no ``A2``; a reversal of a refused purchase
gets 25, as for anything the host never approved. A registry entry without ``tusns`` (written
before the host knew TUSNs, or registered without any) has the module simulator's default TUSN
reported, so existing rigs keep passing; ``"tusns": []`` means none is.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from agent.sim.host_downloads import DOWNLOADS, HostParameters
from agent.sim.module import (
    TEST_PIN,
    TEST_TRANSPORT_KEY,
    TEST_TUSN_KEY,
    TUSN_PREFIX,
    ModuleState,
)
from agent.wire import field59
from agent.wire.builders import response_mti, response_to, with_batch
from agent.wire.errors import DecodeError, WireError
from agent.wire.frame import Header, Layout, decode_frame, host_frame
from agent.wire.mac import (
    DES_FAMILY,
    SM4_FAMILY,
    CipherFamily,
    encode_with_mac,
    mac_matches,
    tusn_ciphertext,
)
from agent.wire.message import Message, encode_message
from agent.wire.pin import BLOCK as PIN_BLOCK_BYTES
from agent.wire.pin import PinError, pin_of_format0, pin_pan
from agent.wire.profile import CUP, Profile
from agent.wire.working_keys import DEFAULT_LAYOUT, LAYOUTS, SCHEMES, issue_working_keys

TEST_TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # same as the module simulator's
TEST_TERMINAL = {"tid": "10000001", "mid": "898100012340001", "tmk": TEST_TMK.hex().upper()}
DECLINE_SUFFIX = "51"
FINANCIAL = ("0100", "0200", "0220")  # moves or holds money: approved into the ledger
ACKNOWLEDGED = ("0320", "0500", "0620")  # batch upload, settlement, script result
MAC_REQUIRED = ("0100", "0200", "0220", "0400", "0620")
TMK_DOWNLOAD = "401"  # 60.3 of an 0800 asking for the terminal's master key (DESIGN.md 18)
# The module simulator's TUSN with its default serial (a dataclass keeps a field's default as the
# class attribute): reported for the test terminal and for registry entries that name none.
DEFAULT_TUSN = TUSN_PREFIX + ModuleState.serial.strip()
# The requests CUP wants A2 on, as (MTI, processing code's first 2 digits, 25, 60.1): purchase
# and pre-authorisation. The host's own list, not the agent's message classes: it plays the
# acquirer, which does not share the terminal's code.
NEEDS_A2 = {("0200", "00", "00", "22"), ("0100", "03", "06", "10")}
TUSN_REFUSAL_REASONS = (
    "a2-missing",  # no field 59, or no A2 in it
    "a2-malformed",  # field 59 not usages, or an A2 field59.a2_problem finds fault with
    "tusn-not-reported",  # the acquirer never reported this TUSN for this terminal
    "factor-mismatch",  # 03 is not the last 6 digits of the PAN
    "ciphertext-wrong",  # 04 is not what the TUSN key gives
)


@dataclass
class Terminal:
    tid: str
    mid: str
    tmk: bytes = field(repr=False)
    status: str = "active"  # or "cancelled" (97 to all), "faulty" (96 to all)
    tusns: list[str] = field(default_factory=lambda: [DEFAULT_TUSN])  # reported to CUP
    require_signin: bool = False  # header processing requirement 3 until it signs in
    asks: int = 0  # a processing requirement (1-15) for the header of the next answer
    family: CipherFamily = DES_FAMILY  # the TMK's: the KCV of a downloaded TMK is its family's
    # first 2 digits of the processing codes this terminal may not use: answered 58
    not_permitted: tuple[str, ...] = ()


# 53 of an SM4 request with a PIN: SM4 PIN block (2), SM4 (3) (DESIGN.md section 4)
SM4_PIN_53 = "23" + "0" * 14


@dataclass
class Session:
    scheme: str
    layout: int
    keys: dict[str, bytes] = field(repr=False)

    @property
    def family(self) -> CipherFamily:
        """The cipher of the session's keys: its layout's (layout 8: SM4)."""
        return SM4_FAMILY if LAYOUTS[self.layout].sm4 else DES_FAMILY

    def mac(self, r: bytes) -> bytes:
        """The keyed step of the CUP MAC from R (8 bytes for DES/3DES, 16 for SM4)."""
        return self.family.mac_from_r(r, self.keys["MAK"])

    def pin_block(self, message: Message) -> bytes | None:
        """The request's PIN block: 52 under DES keys; under SM4 keys 59 ``A1``, else 62 (an
        acquirer that carries it there). None when it carries none."""
        if self.family is DES_FAMILY:
            block = message.get(52)
        else:
            block = _usage_a1(message)
            if block is None:
                block = message.get(62)
        return block if isinstance(block, bytes) else None


def _usage_a1(message: Message) -> bytes | None:
    """Field 59's ``A1`` (the SM4 PIN block); None also when 59 is not usages."""
    raw = message.get(field59.FIELD)
    try:
        return field59.find_usage(
            None if raw is None else field59.field_bytes(raw), field59.SM4_PIN_BLOCK
        )
    except DecodeError:
        return None


@dataclass
class Ledger:
    """What the host did, for tests: purchases by (TID, batch, STAN) and counters."""

    purchases: dict[str, dict[str, object]] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    reversals: int = 0
    repeated_reversals: int = 0
    mac_failures: int = 0
    missing_macs: int = 0  # requests of an MTI that needs a MAC (DESIGN.md section 15) without one
    pins_verified: int = 0  # PIN blocks that decrypted to the card's PIN
    pin_failures: int = 0  # wrong PIN (55) or not a format 0 block (99)
    tusn_refusals: dict[str, int] = field(default_factory=dict)  # by TUSN_REFUSAL_REASONS
    signin_schemes: list[str] = field(default_factory=list)  # 60.3 of each sign-in, in order


def _pan(message: Message) -> str:
    """The card's PAN: field 2, else track 2 (35) up to its separator; "" when neither."""
    return message.text(2, "") or message.text(35, "").split("=")[0]


def _needs_a2(message: Message) -> bool:
    facts = (message.mti, message.text(3, "")[:2], message.text(25, ""), message.text(60, "")[:2])
    return facts in NEEDS_A2


def checked_tusn(tusn: object) -> str:
    """``tusn`` when it can be a TUSN (A2 sub-usage 02: 1 to 50 printable ASCII characters);
    ValueError otherwise."""
    if not (
        isinstance(tusn, str)
        and 1 <= len(tusn) <= field59.TUSN_MAX
        and tusn.isascii()
        and tusn.isprintable()
    ):
        raise ValueError(
            f"a TUSN is 1 to {field59.TUSN_MAX} printable ASCII characters, got {tusn!r}"
        )
    return tusn


def _refusal_code(code: object) -> bool:
    """Whether ``code`` can be field 39 of a refusal: an2, and not the approval 00."""
    return (
        isinstance(code, str)
        and len(code) == 2
        and code.isascii()
        and code.isalnum()
        and code != "00"
    )


def checked_schemes(schemes: object) -> tuple[str, ...]:
    """``schemes`` as the sign-in schemes (60.3) a host accepts: a list of 3-digit codes (empty:
    it refuses every sign-in). ValueError otherwise."""
    if not isinstance(schemes, list | tuple) or not all(
        isinstance(s, str) and len(s) == 3 and s.isascii() and s.isdigit() for s in schemes
    ):
        raise ValueError(
            f'accepted_schemes must be a list of 3-digit sign-in schemes (60.3), e.g. ["004", '
            f'"006"], got {schemes!r}'
        )
    return tuple(dict.fromkeys(schemes))


def _registry_tusns(entry: dict[str, object]) -> list[str]:
    """The TUSNs a registry entry says were reported; an entry from before the host knew TUSNs
    (no "tusns") has the simulator's default one, so the rigs that wrote it keep passing."""
    tusns = entry.get("tusns", [DEFAULT_TUSN])
    if not isinstance(tusns, list):
        raise ValueError(f"terminal {entry.get('tid')}: tusns is not a list")
    return [checked_tusn(tusn) for tusn in tusns]


def registry_family(entry: dict[str, object]) -> CipherFamily:
    """A registry entry's key family: ``DES`` (also when it names none) or ``SM4``."""
    families = {family.name: family for family in (DES_FAMILY, SM4_FAMILY)}
    name = entry.get("family", DES_FAMILY.name)
    if name not in families:
        raise ValueError(f"terminal {entry.get('tid')}: family {name!r} is not DES or SM4")
    return families[name]


# (MTI, 60.3) of a request -> the processing requirement a chaining host puts in its answer
_CHAINED = {
    **{("0800", scheme): 4 for scheme in SCHEMES},  # after a sign-in: the CA keys
    ("0800", "371"): 5,  # after the CA keys: the IC parameters
    ("0800", "381"): 9,  # after the IC parameters: the contactless parameters
}


def _key(message: Message) -> str:
    batch = message.text(60)[2:8] if 60 in message else ""
    return f"{message.text(41, '').strip()}/{batch}/{message.text(11, '')}"


class AcquirerHost:
    """The host's logic: a frame in, a frame (or nothing) out. Thread-safe."""

    def __init__(
        self,
        registry_path: Path,
        *,
        key_layout: int = 0,
        batch: int = 1,
        check_batch: bool = False,
        chain_downloads: bool = False,
        check_tusn: bool = False,
        tusn_refusal: str = "97",
        tusn_key: bytes = TEST_TUSN_KEY,
        profile: Profile = CUP,
        accepted_schemes: Iterable[str] = SCHEMES,
        tmk_in_signin: bool = False,
    ) -> None:
        self.registry_path = registry_path
        self.terminals: dict[str, Terminal] = {}
        self.sessions: dict[str, Session] = {}
        self.ledger = Ledger()
        self.lock = threading.RLock()
        self.key_layout = 0
        self.batch = batch
        self.check_batch = check_batch
        # as a posp_server-style front end does: the sign-in's 0810 asks for CA keys (4), the
        # answer to 0800/371 for IC parameters (5), the answer to 0800/381 for contactless (9)
        self.chain_downloads = chain_downloads
        # remote master-key download (DESIGN.md section 18): the terminal's TMK under the
        # module's transport key, in 0810/401 and, with tmk_in_signin, as tag 00 of sign-ins
        self.tmk_in_signin = tmk_in_signin
        self.transport_key = TEST_TRANSPORT_KEY
        self.tmk_downloads = 0  # 0800/401 answered with the TMK
        self.check_tusn = False
        self.tusn_refusal = "97"
        self.tusn_key = TEST_TUSN_KEY
        self.set_tusn_check(check_tusn, tusn_refusal, tusn_key)
        self.profile = profile
        self.pins: dict[str, str] = {}  # PAN -> PIN; other cards have TEST_PIN
        self.downloads = HostParameters()
        self.set_key_layout(key_layout)
        self.accepted_schemes = SCHEMES
        self.set_accepted_schemes(tuple(accepted_schemes))
        self.reload()

    def set_key_layout(self, layout: int) -> None:
        """Lay out field 62 of sign-ins as ``layout`` (1-7) when the terminal asks for that
        layout's scheme; 0: each scheme's full-length layout."""
        if layout and layout not in LAYOUTS:
            raise ValueError(f"key layout must be 0 (default) or 1 to {len(LAYOUTS)}")
        self.key_layout = layout

    def set_accepted_schemes(self, schemes: Iterable[str]) -> None:
        """Accept sign-ins of these schemes (60.3) only, answering any other 40 (see
        :func:`checked_schemes`)."""
        accepted = checked_schemes(list(schemes))
        with self.lock:
            self.accepted_schemes = accepted

    def set_tusn_check(self, check: bool, refusal: str, key: bytes) -> None:
        """Check A2 of purchases and pre-authorisations (``check``), refusing with the response
        code ``refusal`` (2 ASCII letters or digits, not 00) and verifying ciphertexts under the
        SM4 ``key``. All three are validated before any changes (ValueError)."""
        if not isinstance(check, bool):
            raise ValueError(f"check_tusn must be true or false, got {check!r}")
        if not _refusal_code(refusal):
            raise ValueError(
                f"tusn_refusal must be a response code of 2 ASCII letters or digits other than "
                f"00, got {refusal!r}"
            )
        if not (isinstance(key, bytes) and len(key) == len(TEST_TUSN_KEY)):
            raise ValueError(f"tusn_key must be an SM4 key of {len(TEST_TUSN_KEY)} bytes")
        with self.lock:
            self.check_tusn, self.tusn_refusal, self.tusn_key = check, refusal, key

    # ------------------------------------------------------------------------- registry

    def reload(self) -> None:
        if not self.registry_path.exists():
            self._save_registry([TEST_TERMINAL | {"status": "active", "tusns": [DEFAULT_TUSN]}])
        try:
            raw = json.loads(self.registry_path.read_text())
            terminals = {
                t["tid"]: Terminal(
                    t["tid"],
                    t["mid"],
                    bytes.fromhex(t["tmk"]),
                    t.get("status", "active"),
                    _registry_tusns(t),
                    family=registry_family(t),
                )
                for t in raw["terminals"]
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"host registry {self.registry_path} is unreadable: {exc}") from None
        with self.lock:
            for tid, terminal in terminals.items():
                old = self.terminals.get(tid)
                terminal.require_signin = old.require_signin if old else False
            self.terminals = terminals

    def _save_registry(self, terminals: list[dict[str, object]]) -> None:
        self.registry_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.registry_path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"terminals": terminals}, out, indent=2)
        os.replace(temporary, self.registry_path)

    def save(self) -> None:
        with self.lock:
            self._save_registry(
                [
                    {
                        "tid": t.tid,
                        "mid": t.mid,
                        "tmk": t.tmk.hex().upper(),
                        "status": t.status,
                        "tusns": list(t.tusns),
                        "family": t.family.name,
                    }
                    for t in self.terminals.values()
                ]
            )

    def register(
        self, tid: str, mid: str, tmk: bytes | None = None, family: CipherFamily = DES_FAMILY
    ) -> None:
        """Register (or replace) a terminal; ``family``: its TMK's."""
        with self.lock:
            self.terminals[tid] = Terminal(tid, mid, tmk or TEST_TMK, family=family)
            self.save()

    def set_status(self, tid: str, status: str) -> None:
        with self.lock:
            self.terminals[tid].status = status
            self.sessions.pop(tid, None)
            self.save()

    def report_tusn(self, tid: str, tusn: str, reported: bool = True) -> None:
        """The acquirer reports ``tusn`` to CUP for terminal ``tid`` (``reported`` False: withdraws
        it); persisted in the registry. KeyError for an unknown terminal, ValueError for what
        cannot be a TUSN."""
        checked_tusn(tusn)
        with self.lock:
            tusns = self.terminals[tid].tusns
            if reported and tusn not in tusns:
                tusns.append(tusn)
            elif not reported and tusn in tusns:
                tusns.remove(tusn)
            self.save()

    def forget(self, tid: str) -> None:
        """Lose the terminal's session, as a host database problem would."""
        with self.lock:
            self.sessions.pop(tid, None)

    # ------------------------------------------------------------------------- processing

    def handle(self, frame: bytes) -> bytes | None:
        """The response frame to a request frame (TPDU + header + message, no length)."""
        try:
            request = decode_frame(frame, Layout.TPDU, self.profile)
        except WireError:
            return None
        message = request.message
        with self.lock:
            self.ledger.requests[message.mti] = self.ledger.requests.get(message.mti, 0) + 1
            try:
                mti = response_mti(message.mti)
            except ValueError:
                return None
            response, session = self._respond(message, frame)
            tid = message.text(41, "").strip()
            terminal = self.terminals.get(tid)
        header = request.header or Header()
        requirement = 0
        if terminal is not None and terminal.require_signin:
            requirement = 3
        elif terminal is not None and terminal.asks:
            requirement, terminal.asks = terminal.asks, 0
        elif self.chain_downloads and response.text(39, "") == "00":
            requirement = _CHAINED.get((message.mti, message.text(60, "")[8:11]), 0)
        header = header.with_processing_requirement(requirement)
        response.mti = mti
        if 64 in response.fields and session is not None:
            body = encode_with_mac(response, session.mac, self.profile, session.family.block)
        else:
            response.fields.pop(64, None)
            body = encode_message(response, self.profile)
        assert request.tpdu is not None
        return host_frame(body, request.tpdu.swapped(), header)[2:]

    def _respond(self, message: Message, frame: bytes) -> tuple[Message, Session | None]:
        tid = message.text(41, "").strip()
        terminal = self.terminals.get(tid)
        if terminal is not None and terminal.status == "faulty":
            return response_to(message, "96"), None  # a host-side fault, sign-ins included
        if terminal is None or terminal.status != "active":
            return response_to(message, "97"), None
        if message.text(42, "") != terminal.mid:
            return response_to(message, "03"), None
        code = message.text(60, "")[8:11]
        if (message.mti, code) in DOWNLOADS:
            return self._download(message, code), None
        if message.mti == "0800" and code == TMK_DOWNLOAD:
            self.tmk_downloads += 1
            return response_to(message, "00", {62: self._wrapped_tmk(terminal)}), None
        if message.mti == "0800":
            return self._sign_in(message, terminal), None
        if message.mti == "0820":
            if message.text(60)[8:11] == "002":
                self.sessions.pop(tid, None)
            return response_to(message, "00", self._host_time()), None
        session = self.sessions.get(tid)
        if session is None:
            return response_to(message, "97"), None
        if message.mti in MAC_REQUIRED and 64 not in message:
            self.ledger.missing_macs += 1
            return response_to(message, "A0"), None
        if 64 in message and not mac_matches(frame[11:], session.mac, session.family.block):
            self.ledger.mac_failures += 1
            return response_to(message, "A0"), session
        if self.check_batch and message.mti in FINANCIAL and message.text(60)[2:8] != self._batch():
            return response_to(message, "77"), session
        if self.check_tusn and _needs_a2(message):
            reason = self._a2_refusal(message, terminal)
            if reason:
                self.ledger.tusn_refusals[reason] = self.ledger.tusn_refusals.get(reason, 0) + 1
                return response_to(message, self.tusn_refusal), session
        if message.mti in FINANCIAL and message.text(3, "")[:2] in terminal.not_permitted:
            return response_to(message, "58"), session  # not permitted on this terminal
        if message.mti in FINANCIAL:
            return self._financial(message, session), session
        if message.mti == "0400":
            return self._reversal(message), session
        if message.mti in ACKNOWLEDGED:
            return response_to(message, "00", self._host_time()), session
        return response_to(message, "12"), session

    def _download(self, message: Message, code: str) -> Message:
        field62 = message.get(62, b"")
        result, answer = self.downloads.answer(
            message.mti, code, field62 if isinstance(field62, bytes) else b""
        )
        return response_to(message, result, {62: answer} if answer is not None else {})

    def _sign_in(self, message: Message, terminal: Terminal) -> Message:
        field_60 = message.text(60)
        scheme = field_60[8:11]
        self.ledger.signin_schemes.append(scheme)
        if scheme not in self.accepted_schemes:
            return response_to(message, "40")  # not one the host lists: "function not supported"
        if scheme not in SCHEMES:
            return response_to(message, "30")
        chosen = LAYOUTS.get(self.key_layout)
        layout = chosen if chosen and chosen.scheme == scheme else LAYOUTS[DEFAULT_LAYOUT[scheme]]
        clear = {name: secrets.token_bytes(length) for name, length in layout.keys}
        issued = issue_working_keys(terminal.tmk, layout.number, clear)
        self.sessions[terminal.tid] = Session(scheme, layout.number, clear)
        terminal.require_signin = False
        extra = {**self._host_time(), 60: with_batch(field_60, self.batch)}
        # tag 00 (0x00, the wrapped TMK) before the working keys (agent.keys.tmk_download)
        tag = b"\x00" + self._wrapped_tmk(terminal) if self.tmk_in_signin else b""
        return response_to(message, "00", {**extra, 62: tag + issued.to_field62()})

    def _wrapped_tmk(self, terminal: Terminal) -> bytes:
        """The terminal's TMK under the transport key (3DES ECB, 16 bytes) and its KCV (4), of
        the terminal's family."""
        tmk = terminal.tmk
        return DES_FAMILY.cipher(self.transport_key).encrypt(tmk) + terminal.family.kcv(tmk)

    def _batch(self) -> str:
        return f"{self.batch:06d}"

    def _a2_refusal(self, message: Message, terminal: Terminal) -> str:
        """Why the acquirer refuses the request's field 59 A2, one of TUSN_REFUSAL_REASONS;
        "" when it accepts it."""
        raw = message.get(field59.FIELD)
        try:
            value = field59.find_usage(
                None if raw is None else field59.field_bytes(raw), field59.TUSN_USAGE
            )
        except DecodeError:  # 59 is not a run of usages: its A2 cannot be read
            return "a2-malformed"
        if value is None:
            return "a2-missing"
        if field59.a2_problem(value) is not None:
            return "a2-malformed"
        a2 = field59.sub_usages(value)  # well-formed: 02, 03 and 04 are there
        tusn, factor = a2["02"], a2["03"]
        if tusn not in terminal.tusns:
            return "tusn-not-reported"
        if factor != _pan(message)[-field59.FACTOR_DIGITS :]:
            return "factor-mismatch"
        if a2["04"] != tusn_ciphertext(self.tusn_key, tusn, factor):
            return "ciphertext-wrong"
        return ""

    def _pin_refusal(self, message: Message, session: Session) -> str:
        """The code refusing the PIN (55 wrong, 99 not format 0 for the PAN, or not laid out as
        the session's family wants); "" when right."""
        pan = _pan(message)
        pik = session.keys.get("PIK")
        block = session.pin_block(message)
        family = session.family
        try:
            if pik is None or block is None or len(block) != family.block:
                raise PinError("no PIK or no PIN block of the session's family")
            if family is SM4_FAMILY and (
                message.get(52) != bytes(8) or message.text(53, "") != SM4_PIN_53
            ):
                raise PinError("an SM4 PIN wants 52 = 8 zero bytes and 53 = 23 and 14 zeros")
            clear = family.cipher(pik).decrypt(block)
            # SM4: the format 0 block followed by 8 bytes 0xFF (DES: nothing follows)
            if clear[PIN_BLOCK_BYTES:] != b"\xff" * (family.block - PIN_BLOCK_BYTES):
                raise PinError("not a format 0 block padded with 0xFF")
            pin = pin_of_format0(clear[:PIN_BLOCK_BYTES], pin_pan(pan))
        except PinError:
            self.ledger.pin_failures += 1
            return "99"
        if pin != self.pins.get(pan, TEST_PIN):
            self.ledger.pin_failures += 1
            return "55"
        self.ledger.pins_verified += 1
        return ""

    def _financial(self, message: Message, session: Session) -> Message:
        """A purchase, pre-authorisation, void, refund, completion, advice, upload: each approved
        once (94 for the same STAN again), kept in the ledger with its MTI and processing code."""
        key = _key(message)
        previous = self.ledger.purchases.get(key)
        if previous is not None and not previous["reversed"]:
            self.ledger.duplicates += 1
            return response_to(message, "94")
        original = message.get(61)
        voids = None
        if isinstance(original, str) and message.text(3, "").startswith("20"):
            # a void names its original by batch and STAN (61.1, 61.2), as the host numbered it
            tid = message.text(41, "").strip()
            voids = f"{tid}/{original[:6]}/{original[6:12]}"
            voided = self.ledger.purchases.get(voids)
            if voided is None or voided["reversed"] or voided.get("voided"):
                return response_to(message, "25")
        if 52 in message or session.pin_block(message) is not None:
            refusal = self._pin_refusal(message, session)
            if refusal:
                return response_to(message, refusal)
        amount = message.text(4, "")
        if amount.endswith(DECLINE_SUFFIX):
            return response_to(message, "51", self._host_time())
        rrn = f"{secrets.randbelow(10**12):012d}"
        if voids:  # approved: the sale it names is voided
            self.ledger.purchases[voids]["voided"] = True
        self.ledger.purchases[key] = {
            "amount": amount,
            "rrn": rrn,
            "reversed": False,
            "mti": message.mti,
            "processing": message.text(3, ""),
            **({"voids": voids} if voids else {}),
        }
        extra = {**self._host_time(), 37: rrn, 38: f"{secrets.randbelow(10**6):06d}"}
        return response_to(message, "00", extra)

    def _reversal(self, message: Message) -> Message:
        self.ledger.reversals += 1
        if field59.FIELD in message:
            return response_to(message, "30")  # a reversal carries no 59 (section 4)
        original = self.ledger.purchases.get(_key(message))
        if original is None:
            return response_to(message, "25")
        if original["amount"] != message.text(4, ""):
            return response_to(message, "22")  # not the transaction it names: a conflict
        if original["reversed"]:
            self.ledger.repeated_reversals += 1
        elif "voids" in original:  # a void reversed: the sale it voided stands again
            self.ledger.purchases[original["voids"]]["voided"] = False
        original["reversed"] = True
        return response_to(message, "00")

    @staticmethod
    def _host_time() -> dict[int, str | bytes]:
        now = datetime.now()
        return {12: now.strftime("%H%M%S"), 13: now.strftime("%m%d")}

    def state(self) -> dict[str, object]:
        with self.lock:
            return {
                "terminals": [
                    {
                        "tid": t.tid,
                        "mid": t.mid,
                        "status": t.status,
                        "require_signin": t.require_signin,
                        "tusns": list(t.tusns),
                        "family": t.family.name,
                    }
                    for t in self.terminals.values()
                ],
                "sessions": {
                    tid: {"scheme": s.scheme, "layout": s.layout}
                    for tid, s in self.sessions.items()
                },
                "batch": self.batch,
                "check_batch": self.check_batch,
                "chain_downloads": self.chain_downloads,
                "tmk_in_signin": self.tmk_in_signin,
                "tmk_downloads": self.tmk_downloads,
                "check_tusn": self.check_tusn,
                "tusn_refusal": self.tusn_refusal,
                "tusn_refusals": dict(self.ledger.tusn_refusals),
                "key_layout": self.key_layout,
                "accepted_schemes": list(self.accepted_schemes),
                "signin_schemes": list(self.ledger.signin_schemes),
                "purchases": dict(self.ledger.purchases),
                "requests": dict(self.ledger.requests),
                "duplicates": self.ledger.duplicates,
                "reversals": self.ledger.reversals,
                "repeated_reversals": self.ledger.repeated_reversals,
                "mac_failures": self.ledger.mac_failures,
                "missing_macs": self.ledger.missing_macs,
                "pins_verified": self.ledger.pins_verified,
                "pin_failures": self.ledger.pin_failures,
                "downloads": {
                    "requests": dict(self.downloads.requests),
                    "status_uploads": list(self.downloads.status_uploads),
                    "status_refusals": list(self.downloads.status_refusals),
                    "parameter_table": self.downloads.parameter_table,
                    "fault": self.downloads.fault,
                },
            }
