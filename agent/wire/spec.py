"""The field table of the pinned CUP POS profile (DESIGN.md section 4), as data.

Formats: ``n`` is packed BCD, ``z`` is track data packed as BCD with ``=`` written as the nibble
``D``, ``an``/``ans`` are text, ``b`` is binary. Variable lengths are BCD in one (LL) or two (LLL)
bytes; they count digits for n/z fields and bytes for the others. An odd number of digits needs a
pad nibble: ``justify`` says on which side the digits sit (``left``: pad nibble last).
:mod:`agent.wire.profile` turns a table like this one into the codec's spec and lays an
acquirer's overrides over it.
"""

from __future__ import annotations

from dataclasses import dataclass

FIXED, LL, LLL = 0, 1, 2
FORMATS = ("n", "z", "an", "ans", "b")
LENGTH_NAMES = {FIXED: "fixed", LL: "LL", LLL: "LLL"}
# The most a length prefix of each kind can say (2 BCD digits, 3 digits in 2 bytes).
LONGEST = {FIXED: 999, LL: 99, LLL: 999}


@dataclass(frozen=True)
class FieldDef:
    """One row of a field table: the field's number, name, format and length."""

    number: int
    name: str
    fmt: str  # one of FORMATS
    max_len: int  # digits for n/z, bytes otherwise
    len_type: int = FIXED  # FIXED, LL or LLL (bytes of BCD length prefix)
    justify: str = ""  # n/z with an odd digit count: "left" (pad last) or "right" (pad first)
    charset: str = "ascii"  # an/ans only

    def __post_init__(self) -> None:
        if not self.justify and self.packed:
            # Fixed fields are right-justified, variable ones left-justified, unless the row says.
            object.__setattr__(self, "justify", "right" if self.len_type == FIXED else "left")

    @property
    def packed(self) -> bool:
        return self.fmt in ("n", "z")

    @property
    def kind(self) -> str:
        """The format as written in the spec tables, e.g. ``n..19 LL`` or ``ans8``."""
        if self.len_type == FIXED:
            return f"{self.fmt}{self.max_len}"
        return f"{self.fmt}..{self.max_len} {LENGTH_NAMES[self.len_type]}"


CUP_FIELDS: tuple[FieldDef, ...] = (
    FieldDef(2, "primary account number", "n", 19, LL),
    FieldDef(3, "processing code", "n", 6),
    FieldDef(4, "amount (fen)", "n", 12),
    FieldDef(11, "STAN", "n", 6),
    FieldDef(12, "local time hhmmss", "n", 6),
    FieldDef(13, "local date MMDD", "n", 4),
    FieldDef(14, "expiry", "n", 4),
    FieldDef(15, "settlement date", "n", 4),
    # Real CUP terminals send the entry mode left-justified: 021 is 02 10, 071 is 07 10.
    FieldDef(22, "entry mode", "n", 3, justify="left"),
    FieldDef(23, "card sequence number", "n", 3, justify="right"),
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
    # A run of usages (tag an2 + ASCII length n3 + value), parsed by agent.wire.field59; to the
    # codec it is opaque bytes, so unknown usages pass through unchanged.
    FieldDef(59, "custom data (usages)", "b", 999, LLL),
    # Real acquirers put 8 to 20 digits here (60.1-60.3 and optional sub-fields).
    FieldDef(60, "type / batch / network code", "n", 32, LLL),
    FieldDef(61, "original transaction data", "n", 29, LLL),
    FieldDef(62, "working keys / terminal data", "b", 512, LLL),
    # Hosts put issuer names in Chinese here. GB18030 decodes every GB2312 and GBK text the same
    # way those do; an acquirer profile can narrow it to gb2312.
    FieldDef(63, "operator / issuer data", "ans", 163, LLL, charset="gb18030"),
    FieldDef(64, "MAC", "b", 8),
)

MTI_NAMES = {
    "0100": "authorisation request (pre-authorisation)",
    "0110": "authorisation response",
    "0200": "financial request",
    "0210": "financial response",
    "0220": "advice",
    "0230": "advice response",
    "0320": "batch upload",
    "0330": "batch upload response",
    "0400": "reversal request",
    "0410": "reversal response",
    "0500": "settlement request",
    "0510": "settlement response",
    "0620": "script result advice",
    "0630": "script result advice response",
    "0800": "network management request (sign-in, downloads)",
    "0810": "network management response",
    "0820": "network management advice (echo, sign-off, uploads)",
    "0830": "network management advice response",
}
