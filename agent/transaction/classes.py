"""Message classes of wrap mode (DESIGN.md section 15): what the agent does with an app request is
decided by its MTI, the first two digits of its processing code (3), its condition code (25), its
message type (60.1) and, for settlement and batch upload, its network management code (60.3). The
class says whether the request carries a MAC, whether it is reversible (written pending first,
reversed on a timeout or an approval the app did not get) and whether it is held (answered locally
while the terminal is unregistered).

A request that fits no row, or whose MTI is a response or unknown, fits no class: the agent answers
it locally with 30 and never forwards it.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from agent.wire.message import Message

ANY: tuple[str, ...] = ()  # a criterion a row does not look at ("orig." or empty in the table)


class MacRule(enum.Enum):
    ALWAYS = "always"  # the agent computes field 64 through the module
    IF_SENT = "if the app sends 64"  # only when the app put a field 64 placeholder in


@dataclass(frozen=True)
class MessageClass:
    name: str
    mti: tuple[str, ...]
    processing: tuple[str, ...]  # first 2 digits of field 3
    condition: tuple[str, ...]  # field 25
    message_type: tuple[str, ...]  # 60.1
    mac: MacRule
    reversible: bool
    held: bool
    # 60.2 is set to the current batch (DESIGN.md section 10); a reversal keeps the original's
    # (a script result names its original in 61.1)
    current_batch: bool = True
    # field 11 is the original's STAN (the app's number, translated), not a new one
    refers_by_stan: bool = False
    # approved, it voids the original that 61 names: a repetition of that one is a new request
    voids: bool = False
    # carries the terminal hardware serial number in field 59 usage A2 (DESIGN.md section 17)
    needs_tusn: bool = False
    network_code: tuple[str, ...] = ANY  # 60.3: settlement and batch upload name their kind
    # settlement or batch upload: counts the batch, the reversals queued included
    settles: bool = False
    # moves money and is never reversed: an app's repetition of a try the host may have taken
    # without the app getting its answer goes again under that try's STAN (DESIGN.md
    # section 10: not sent twice), so the host tells the repeat
    repeats_its_stan: bool = False

    def fits(
        self, mti: str, processing: str, condition: str, message_type: str, network_code: str
    ) -> bool:
        return all(
            not allowed or value in allowed
            for value, allowed in (
                (mti, self.mti),
                (processing, self.processing),
                (condition, self.condition),
                (message_type, self.message_type),
                (network_code, self.network_code),
            )
        )

    @property
    def after_reversals(self) -> bool:
        """Whether the reversals queued go to the host before it: before every financial
        request (DESIGN.md section 8), and before a settlement or batch upload, which would
        count a sale the app was told failed and leave its reversal to a closed batch."""
        return self.held or self.settles

    def needs_mac(self, request: Message) -> bool:
        return self.mac is MacRule.ALWAYS or 64 in request


_ALWAYS, _IF_SENT = MacRule.ALWAYS, MacRule.IF_SENT
SETTLEMENT = "201"  # 60.3 of a settlement (0500)
# 60.3 of a batch upload (0320) of one transaction, named by its STAN: 201 magnetic stripe, 203
# IC, 205 out of balance; and of the message that ends the upload (its own STAN): 202 balanced,
# 207 not
BATCH_UPLOAD = ("201", "203", "205")
BATCH_UPLOAD_END = ("202", "207")

_C = MessageClass
# fmt: off
CLASSES: tuple[MessageClass, ...] = (
    # name, MTI, processing code (first 2 digits), 25, 60.1, MAC, reversible, held
    _C("balance inquiry", ("0200",), ("31",), ("00",), ("01",), _ALWAYS, False, True),
    _C("purchase", ("0200",), ("00",), ("00",), ("22",), _ALWAYS, True, True, needs_tusn=True),
    _C("void", ("0200",), ("20",), ("00",), ("23",), _ALWAYS, True, True, voids=True),
    _C("refund", ("0220",), ("20",), ("00",), ("25",), _ALWAYS, False, True,
       repeats_its_stan=True),
    _C("pre-authorisation", ("0100",), ("03",), ("06",), ("10",), _ALWAYS, True, True,
       needs_tusn=True),
    _C("pre-authorisation void", ("0100",), ("20",), ("06",), ("11",), _ALWAYS, True, True,
       voids=True),
    _C("completion request", ("0200",), ("00",), ("06",), ("20",), _ALWAYS, True, True),
    _C("completion void", ("0200",), ("20",), ("06",), ("21",), _ALWAYS, True, True,
       voids=True),
    _C("completion advice, offline, adjust", ("0220",), ("00",), ("06", "00"),
       ("24", "30", "32", "34"), _ALWAYS, False, True, repeats_its_stan=True),
    _C("offline (EC) upload", ("0200",), ("00",), ("00",), ("36",), _ALWAYS, False, True,
       repeats_its_stan=True),
    _C("reversal", ("0400",), ANY, ANY, ANY, _ALWAYS, False, False,
       current_batch=False, refers_by_stan=True),
    _C("script result", ("0620",), ANY, ANY, ANY, _ALWAYS, False, False),
    _C("settlement", ("0500",), ANY, ANY, ("00",), _IF_SENT, False, False,
       network_code=(SETTLEMENT,), settles=True),
    _C("batch upload", ("0320",), ANY, ANY, ("00",), _IF_SENT, False, False,
       refers_by_stan=True, network_code=BATCH_UPLOAD, settles=True),
    _C("batch upload end", ("0320",), ANY, ANY, ("00",), _IF_SENT, False, False,
       network_code=BATCH_UPLOAD_END, settles=True),
    _C("network management", ("0800", "0820"), ANY, ANY, ("00",), _IF_SENT, False, False),
)
# fmt: on
NETWORK_MANAGEMENT = CLASSES[-1]


def classify(request: Message) -> MessageClass | None:
    """The class of an app request, or ``None`` when it fits no row."""
    processing = request.get(3)
    condition = request.get(25)
    field_60 = request.get(60)
    facts = (
        request.mti,
        processing[:2] if isinstance(processing, str) else "",
        condition if isinstance(condition, str) else "",
        field_60[:2] if isinstance(field_60, str) else "",
        field_60[8:11] if isinstance(field_60, str) else "",
    )
    return _class_of(facts)


# a request is classified three times on its way (its mode, the sender, recovery): the few
# kinds a terminal sends are looked up, not matched against every row each time (bounded: an
# app sending every combination gets no more memory for it)
@functools.lru_cache(maxsize=256)
def _class_of(facts: tuple[str, str, str, str, str]) -> MessageClass | None:
    return next((c for c in CLASSES if c.fits(*facts)), None)
