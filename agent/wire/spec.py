"""Field table of the pinned CUP POS profile and the pyiso8583 spec built from it.

Formats follow DESIGN.md section 4: ``n`` is packed BCD, ``z`` is track data packed as BCD with
``=`` written as the nibble ``D``, ``an``/``ans`` are ASCII, ``b`` is binary. Variable lengths are
BCD in one (LL) or two (LLL) bytes; they count digits for n/z fields and bytes for the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FIXED, LL, LLL = 0, 1, 2


@dataclass(frozen=True)
class FieldDef:
    number: int
    name: str
    fmt: str  # "n", "z", "an", "ans" or "b"
    max_len: int  # digits for n/z, bytes otherwise
    len_type: int = FIXED  # FIXED, LL or LLL (bytes of BCD length prefix)
    charset: str = "ascii"  # text fields only

    @property
    def packed(self) -> bool:
        return self.fmt in ("n", "z")

    @property
    def kind(self) -> str:
        """The format as written in the spec tables, e.g. ``n..19 LL`` or ``ans8``."""
        if self.len_type == FIXED:
            return f"{self.fmt}{self.max_len}"
        return f"{self.fmt}..{self.max_len} {'LL' if self.len_type == LL else 'LLL'}"


FIELDS: dict[int, FieldDef] = {
    f.number: f
    for f in (
        FieldDef(2, "primary account number", "n", 19, LL),
        FieldDef(3, "processing code", "n", 6),
        FieldDef(4, "amount (fen)", "n", 12),
        FieldDef(11, "STAN", "n", 6),
        FieldDef(12, "local time hhmmss", "n", 6),
        FieldDef(13, "local date MMDD", "n", 4),
        FieldDef(14, "expiry", "n", 4),
        FieldDef(15, "settlement date", "n", 4),
        FieldDef(22, "entry mode", "n", 3),
        FieldDef(23, "card sequence number", "n", 3),
        FieldDef(25, "condition code", "n", 2),
        FieldDef(26, "PIN capture code", "n", 2),
        FieldDef(32, "acquirer id", "n", 11, LL),
        FieldDef(35, "track 2", "z", 37, LL),
        FieldDef(36, "track 3", "z", 104, LLL),
        FieldDef(37, "retrieval reference number", "an", 12),
        FieldDef(38, "authorization code", "an", 6),
        FieldDef(39, "response code", "an", 2),
        FieldDef(41, "terminal id (TID)", "ans", 8),
        FieldDef(42, "merchant id (MID)", "ans", 15),
        FieldDef(44, "acquirer/issuer info", "an", 25, LL),
        FieldDef(48, "additional data", "n", 322, LLL),
        FieldDef(49, "currency", "an", 3),
        FieldDef(52, "PIN block", "b", 8),
        FieldDef(53, "security control info", "n", 16),
        FieldDef(54, "balance", "an", 20, LLL),
        FieldDef(55, "IC card data", "b", 255, LLL),
        FieldDef(60, "type / batch / network code", "n", 17, LLL),
        FieldDef(61, "original transaction data", "n", 29, LLL),
        FieldDef(62, "working keys / terminal data", "b", 512, LLL),
        # Hosts put issuer names in Chinese here; GB18030 is a superset of ASCII and of GBK.
        FieldDef(63, "operator / issuer data", "ans", 163, LLL, charset="gb18030"),
        FieldDef(64, "MAC", "b", 8),
    )
}

MTI_NAMES = {
    "0200": "financial request (purchase)",
    "0210": "financial response",
    "0220": "advice",
    "0230": "advice response",
    "0320": "batch upload",
    "0330": "batch upload response",
    "0400": "reversal request",
    "0410": "reversal response",
    "0500": "settlement request",
    "0510": "settlement response",
    "0800": "network management request (sign-in)",
    "0810": "network management response",
    "0820": "network management advice (echo / sign-off)",
    "0830": "network management advice response",
}


def _pyiso8583_field(f: FieldDef) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "data_enc": "b" if f.fmt in ("n", "z", "b") else f.charset,
        "len_enc": "bcd",
        "len_type": f.len_type,
        "max_len": f.max_len,
        "len_count": "nibbles" if f.packed else "bytes",
        "desc": f.name,
    }
    if f.packed:
        spec["left_pad" if f.len_type == FIXED else "right_pad"] = "0"
    return spec


def _build_spec() -> dict[str, dict[str, Any]]:
    spec: dict[str, dict[str, Any]] = {
        # TPDU and header are framed by agent.wire.frame, not by pyiso8583.
        "h": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 0, "desc": "header"},
        "t": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 2, "desc": "MTI"},
        "p": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 8, "desc": "bitmap"},
    }
    for number, f in FIELDS.items():
        spec[str(number)] = _pyiso8583_field(f)
    return spec


PYISO8583_SPEC = _build_spec()
