"""The acquirer host simulator's side of the session downloads (DESIGN.md section 16): terminal
parameters, status upload, CA public keys, IC parameters and contactless parameters, with the
paging of the lists and faults for tests (a CA key whose SHA-1 is wrong, a TLV that overruns).

The terminal parameters come from one of three tables (``parameter_table``): ``cup``, the
built-in table of DESIGN.md section 16, or the tables of two real acquirers, which the agent
only reads right with the matching ``[parameters]`` of a wire profile. The status upload is
parsed as a CUP host does, with the lengths of the table this host sends: a tag it does not know
or a value of another length is answered 30.

The CA keys are test keys: the modulus is filler bytes, not an RSA key, and carries a correct
SHA-1 check value (DF03) so the agent's check is exercised; the 国密 (SM2) CA keys of 0820/373
and 0800/373 likewise, a filler public key without exponent and an SM3 check value."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from agent.session import emv, parameters, tlv
from agent.session.downloads import (
    CA_KEY,
    CA_KEY_LIST,
    CA_KEYS_END,
    CONTACTLESS,
    IC_PARAMETER_LIST,
    IC_PARAMETERS,
    IC_PARAMETERS_END,
    SM2_CA_KEY,
    SM2_CA_KEY_LIST,
    STATUS_UPLOAD,
    TERMINAL_PARAMETERS,
)

# The 0800/360 answers: (tag, value) in the order sent. The built-in table first.
_CUP_TERMINAL: tuple[tuple[str, bytes], ...] = (
    ("11", b"01"),  # application type
    ("12", b"60"),  # timeout, seconds
    ("13", b"3"),  # retries
    ("14", b"4008888888".ljust(14)),  # transaction phones
    ("15", b" " * 14),
    ("16", b" " * 14),
    ("17", b"95516".ljust(14)),  # management phone
    ("18", b"0"),  # tips
    ("19", b"10"),  # tip percent
    ("20", b"1"),  # manual entry
    ("21", b"0"),  # auto sign-off
    ("22", "测试商户银联商务有限公司".encode("gb2312").ljust(40)),
    ("23", b"3"),  # reversal retries
    ("24", b"0"),  # offline upload mode
    ("25", b"1"),  # master-key index
    ("26", bytes.fromhex("FFB80000")),  # transactions enabled, one bit each
    ("27", b"2"),  # receipt copies
    ("28", b"1"),  # mask the card number
    ("29", b"0"),  # show the logo
    ("30", b"00"),  # quick transaction type
    ("51", b"001100111098"),
)


def _varied(changes: dict[str, bytes | None]) -> tuple[tuple[str, bytes], ...]:
    """The built-in table with some values changed (None: the tag not sent)."""
    table = []
    for tag, value in _CUP_TERMINAL:
        changed = changes.get(tag, value)
        if changed is not None:
            table.append((tag, changed))
    return tuple(table)


PARAMETER_TABLES = {
    "cup": _CUP_TERMINAL,
    # A Huateng acquirer console (T30101Action.parseTermPara): 24 always a space, 25 a bitmap of
    # eight flags as 2 hex characters, 26 a bit per transaction (32) as 8 hex characters, no 51.
    "huateng": _varied({"24": b" ", "25": b"e0", "26": b"fc3f0000", "51": None}),
    # The AIAUnionPay terminal app (CUPPackager, the 0810/360 parser): 19 read with the spaces
    # trimmed, as a host pads it; 27-30 unknown to it (its parser stops there), so not sent.
    "aiaunionpay": _varied({"19": b" 5", "27": None, "28": None, "29": None, "30": None}),
}

# (MTI, 60.3) of the download requests the host answers
DOWNLOADS = {
    ("0800", TERMINAL_PARAMETERS),
    ("0820", STATUS_UPLOAD),
    ("0820", CA_KEY_LIST),
    ("0800", CA_KEY),
    ("0820", SM2_CA_KEY_LIST),
    ("0800", SM2_CA_KEY),
    ("0800", CA_KEYS_END),
    ("0820", IC_PARAMETER_LIST),
    ("0800", IC_PARAMETERS),
    ("0800", IC_PARAMETERS_END),
    ("0800", CONTACTLESS),
}
PAGE = 2  # entries per list answer, so that a list of three takes two parts
# ca-sha1: the DF03 of CA key 02 (and of SM2 CA key 12) wrong; tlv-overrun: a list's last TLV
# runs off the end;
# list-never-ends: every list answer says more follows, with an entry not listed before;
# list-repeats: every list answer is the first part, more following (a host that ignores the
# start index); short-62: field 62 of the answers to the
# steps in ``fault_codes`` (all by default) one byte short; refuse: those steps answered 96
FAULTS = ("", "ca-sha1", "tlv-overrun", "list-never-ends", "list-repeats", "short-62", "refuse")
UNIONPAY_RID = bytes.fromhex("A000000333")


def sample_ca_key(index: int, rid: bytes = UNIONPAY_RID) -> list[tuple[str, bytes]]:
    """A CA public key of ``rid`` whose DF03 is right (a test modulus, not a real key)."""
    key_index = bytes([index])
    modulus = b"".join(hashlib.sha256(bytes([index, n])).digest() for n in range(4))  # 128
    exponent = b"\x03"
    return [
        ("9F06", rid),
        ("9F22", key_index),
        ("DF05", b"20301231"),
        ("DF06", b"\x01"),  # SHA-1
        ("DF07", b"\x01"),  # RSA
        ("DF02", modulus),
        ("DF04", exponent),
        ("DF03", hashlib.sha1(rid + key_index + modulus + exponent).digest()),
    ]


def sample_sm2_ca_key(index: int, rid: bytes = UNIONPAY_RID) -> list[tuple[str, bytes]]:
    """A 国密 CA public key of ``rid`` whose DF03 (SM3) is right: 64 filler bytes for the point,
    no exponent."""
    key_index = bytes([index])
    point = b"".join(hashlib.sha256(bytes([0x5A, index, n])).digest() for n in range(2))
    return [
        ("9F06", rid),
        ("9F22", key_index),
        ("DF05", b"20301231"),
        ("DF06", b"\x07"),  # SM3
        ("DF07", emv.SM2),
        ("DF02", point),
        ("DF03", hashlib.new("sm3", rid + key_index + point).digest()),
    ]


def _test_aid(aid: str) -> list[tuple[str, bytes]]:
    return [
        ("9F06", bytes.fromhex(aid)),
        ("DF01", b"\x00"),  # application selection indicator
        ("9F08", bytes.fromhex("0030")),  # application version
        ("DF11", bytes.fromhex("D84000A800")),  # TAC default
        ("DF12", bytes.fromhex("D84004F800")),  # TAC online
        ("DF13", bytes.fromhex("0010000000")),  # TAC denial
        ("9F1B", bytes.fromhex("00000000")),  # floor limit
        ("9F7B", bytes.fromhex("000000100000")),  # EC terminal transaction limit
    ]


def parse_status(field62: bytes, lengths: dict[str, int]) -> tuple[dict[str, bytes], str]:
    """A status upload's field 62 read as a CUP host does: ({tag: value}, "") or ({}, what is
    wrong). ``lengths``: the parameter tags this host knows; 01-05 are one digit each."""
    devices = [number for number, _ in parameters.STATUS_DEVICES]
    known = {number: 1 for number in devices} | lengths
    parsed: dict[str, bytes] = {}
    i = 0
    while i < len(field62):
        tag = field62[i : i + 2].decode("latin-1")
        if tag not in known:
            return {}, f"unknown status tag {tag!r} at byte {i}"
        value = field62[i + 2 : i + 2 + known[tag]]
        if len(value) < known[tag]:
            return {}, f"tag {tag} needs {known[tag]} bytes, {len(value)} are left"
        if tag in parsed:
            return {}, f"tag {tag} twice"
        if tag in devices and value not in (b"0", b"1"):
            return {}, f"device tag {tag} is {value!r}, not 0 or 1"
        parsed[tag] = value
        i += 2 + known[tag]
    missing = [tag for tag in devices if tag not in parsed]
    if missing:
        return {}, f"device tags {', '.join(missing)} missing"
    return parsed, ""


@dataclass
class HostParameters:
    parameter_table: str = "cup"  # which of PARAMETER_TABLES 0800/360 is answered with
    ca_keys: list[list[tuple[str, bytes]]] = field(
        default_factory=lambda: [sample_ca_key(n) for n in (1, 2, 3)]
    )
    sm2_ca_keys: list[list[tuple[str, bytes]]] = field(
        default_factory=lambda: [sample_sm2_ca_key(n) for n in (0x11, 0x12, 0x13)]
    )
    aids: list[list[tuple[str, bytes]]] = field(
        default_factory=lambda: [_test_aid(a) for a in ("A000000333010101", "A000000333010102")]
    )
    contactless: list[tuple[str, bytes]] = field(
        default_factory=lambda: [
            (tag, bytes.fromhex("000000050000")) for tag in emv.CONTACTLESS_TAGS
        ]
    )
    fault: str = ""
    fault_codes: set[str] = field(default_factory=set)  # the steps short-62/refuse hit; {}: all
    status_uploads: list[str] = field(default_factory=list)  # field 62 of each, hex
    statuses: list[dict[str, bytes]] = field(default_factory=list)  # each one accepted, parsed
    status_refusals: list[str] = field(default_factory=list)  # why each one refused was
    requests: dict[str, int] = field(default_factory=dict)  # by 60.3 code

    def set_fault(self, fault: str) -> None:
        if fault not in FAULTS:
            raise ValueError(f"download fault must be one of {', '.join(map(repr, FAULTS))}")
        self.fault = fault

    def set_parameter_table(self, name: str) -> None:
        if name not in PARAMETER_TABLES:
            raise ValueError(
                f"parameter table must be one of {', '.join(map(repr, PARAMETER_TABLES))}"
            )
        self.parameter_table = name

    def terminal_parameters(self) -> bytes:
        """Field 62 of the 0810/360: the table in use, tag after tag."""
        return b"".join(t.encode() + v for t, v in PARAMETER_TABLES[self.parameter_table])

    def answer(self, mti: str, code: str, field62: bytes) -> tuple[str, bytes | None]:
        """(response code, field 62) for a download request (one of ``DOWNLOADS``)."""
        self.requests[code] = self.requests.get(code, 0) + 1
        handlers = {
            ("0800", TERMINAL_PARAMETERS): lambda: ("00", self.terminal_parameters()),
            ("0820", STATUS_UPLOAD): self._status,
            ("0820", CA_KEY_LIST): lambda: self._list(self.ca_keys, ("9F06", "9F22", "DF05")),
            ("0800", CA_KEY): lambda: self._ca_key(self.ca_keys),
            ("0820", SM2_CA_KEY_LIST): lambda: self._list(
                self.sm2_ca_keys, ("9F06", "9F22", "DF05")
            ),
            ("0800", SM2_CA_KEY): lambda: self._ca_key(self.sm2_ca_keys),
            ("0800", CA_KEYS_END): lambda: ("00", None),
            ("0820", IC_PARAMETER_LIST): lambda: self._list(self.aids, ("9F06",)),
            ("0800", IC_PARAMETERS): self._aid,
            ("0800", IC_PARAMETERS_END): lambda: ("00", None),
            ("0800", CONTACTLESS): lambda: ("00", tlv.encode_all(self.contactless)),
        }
        self._request = field62
        result, answer = handlers[(mti, code)]()
        if self.fault in ("short-62", "refuse") and (
            not self.fault_codes or code in self.fault_codes
        ):
            if self.fault == "refuse":
                return "96", None
            answer = answer[:-1] if answer else answer
        return result, answer

    def _status(self) -> tuple[str, bytes | None]:
        self.status_uploads.append(self._request.hex().upper())
        lengths = {tag: len(value) for tag, value in PARAMETER_TABLES[self.parameter_table]}
        parsed, problem = parse_status(self._request, lengths)
        if problem:
            self.status_refusals.append(problem)
            return "30", None
        self.statuses.append(parsed)
        return "00", None

    def _list(
        self, entries: list[list[tuple[str, bytes]]], tags: tuple[str, ...]
    ) -> tuple[str, bytes | None]:
        request = self._request.decode("ascii", "replace")
        if len(request) != 3 or request[0] != "1" or not request[1:].isdigit():
            return "30", None
        start = int(request[1:])
        if self.fault in ("list-never-ends", "list-repeats"):
            first = [(t, v) for t, v in entries[0] if t in tags]
            if self.fault == "list-never-ends":  # each part new: its first tag's value varies
                first[0] = (first[0][0], first[0][1] + bytes([sum(self.requests.values()) % 256]))
            return "00", emv.MORE + tlv.encode_all(first)
        part = entries[start : start + PAGE]
        if not part:
            return "00", emv.NONE
        more = start + PAGE < len(entries)
        body = b"".join(tlv.encode_all([(t, v) for t, v in entry if t in tags]) for entry in part)
        if self.fault == "tlv-overrun":
            body += bytes.fromhex("9F0681")  # a TLV whose length runs off the end
        return "00", (emv.MORE if more else emv.LAST) + body

    def _find(
        self, entries: list[list[tuple[str, bytes]]], tags: tuple[str, ...]
    ) -> list[tuple[str, bytes]] | None:
        try:
            wanted = dict(tlv.parse(self._request))
        except tlv.TlvError:
            return None
        for entry in entries:
            values = dict(entry)
            if all(values.get(t) == wanted.get(t) for t in tags):
                return entry
        return None

    def _ca_key(self, keys: list[list[tuple[str, bytes]]]) -> tuple[str, bytes | None]:
        entry = self._find(keys, ("9F06", "9F22"))
        if entry is None:
            return "25", None
        if self.fault == "ca-sha1" and dict(entry)["9F22"] in (b"\x02", b"\x12"):  # one each
            entry = [(t, bytes(len(v)) if t == "DF03" else v) for t, v in entry]
        return "00", emv.LAST + tlv.encode_all(entry)

    def _aid(self) -> tuple[str, bytes | None]:
        entry = self._find(self.aids, ("9F06",))
        if entry is None:
            return "25", None
        return "00", emv.LAST + tlv.encode_all(entry)
