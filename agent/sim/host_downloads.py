"""The acquirer host simulator's side of the session downloads (DESIGN.md section 16): terminal
parameters, status upload, CA public keys, IC parameters and contactless parameters, with the
paging of the lists and faults for tests (a CA key whose SHA-1 is wrong, a TLV that overruns).

The CA keys are test keys: the modulus is filler bytes, not an RSA key, and carries a correct
SHA-1 check value (DF03) so the agent's check is exercised."""

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
    STATUS_UPLOAD,
    TERMINAL_PARAMETERS,
)

# (MTI, 60.3) of the download requests the host answers
DOWNLOADS = {
    ("0800", TERMINAL_PARAMETERS),
    ("0820", STATUS_UPLOAD),
    ("0820", CA_KEY_LIST),
    ("0800", CA_KEY),
    ("0800", CA_KEYS_END),
    ("0820", IC_PARAMETER_LIST),
    ("0800", IC_PARAMETERS),
    ("0800", IC_PARAMETERS_END),
    ("0800", CONTACTLESS),
}
PAGE = 2  # entries per list answer, so that a list of three takes two parts
# ca-sha1: the DF03 of CA key 02 wrong; tlv-overrun: a list's last TLV runs off the end;
# list-never-ends: every list answer says more follows; short-62: field 62 of the answers to the
# steps in ``fault_codes`` (all by default) one byte short; refuse: those steps answered 96
FAULTS = ("", "ca-sha1", "tlv-overrun", "list-never-ends", "short-62", "refuse")
UNIONPAY_RID = bytes.fromhex("A000000333")


def _test_ca_key(index: int) -> list[tuple[str, bytes]]:
    rid, key_index = UNIONPAY_RID, bytes([index])
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


@dataclass
class HostParameters:
    terminal: dict[str, str] = field(
        default_factory=lambda: {
            "application_type": "01",
            "timeout_seconds": "60",
            "retries": "3",
            "transaction_phone_1": "4008888888",
            "management_phone": "95516",
            "tips_enabled": "0",
            "manual_entry": "1",
            "auto_sign_off": "0",
            "merchant_name": "测试商户银联商务有限公司",
            "master_key_index": "01",
            "transactions_enabled": "FFFFFFFFFFFFFFFF",
        }
    )
    ca_keys: list[list[tuple[str, bytes]]] = field(
        default_factory=lambda: [_test_ca_key(n) for n in (1, 2, 3)]
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
    requests: dict[str, int] = field(default_factory=dict)  # by 60.3 code

    def set_fault(self, fault: str) -> None:
        if fault not in FAULTS:
            raise ValueError(f"download fault must be one of {', '.join(map(repr, FAULTS))}")
        self.fault = fault

    def answer(self, mti: str, code: str, field62: bytes) -> tuple[str, bytes | None]:
        """(response code, field 62) for a download request (one of ``DOWNLOADS``)."""
        self.requests[code] = self.requests.get(code, 0) + 1
        handlers = {
            ("0800", TERMINAL_PARAMETERS): lambda: ("00", parameters.encode(self.terminal)),
            ("0820", STATUS_UPLOAD): self._status,
            ("0820", CA_KEY_LIST): lambda: self._list(self.ca_keys, ("9F06", "9F22", "DF05")),
            ("0800", CA_KEY): self._ca_key,
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
        return "00", None

    def _list(
        self, entries: list[list[tuple[str, bytes]]], tags: tuple[str, ...]
    ) -> tuple[str, bytes | None]:
        request = self._request.decode("ascii", "replace")
        if len(request) != 3 or request[0] != "1" or not request[1:].isdigit():
            return "30", None
        if self.fault == "list-never-ends":
            return "00", emv.MORE + tlv.encode_all([(t, v) for t, v in entries[0] if t in tags])
        start = int(request[1:])
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

    def _ca_key(self) -> tuple[str, bytes | None]:
        entry = self._find(self.ca_keys, ("9F06", "9F22"))
        if entry is None:
            return "25", None
        if self.fault == "ca-sha1" and dict(entry)["9F22"] == b"\x02":  # one key of the list
            entry = [(t, bytes(20) if t == "DF03" else v) for t, v in entry]
        return "00", emv.LAST + tlv.encode_all(entry)

    def _aid(self) -> tuple[str, bytes | None]:
        entry = self._find(self.aids, ("9F06",))
        if entry is None:
            return "25", None
        return "00", emv.LAST + tlv.encode_all(entry)
