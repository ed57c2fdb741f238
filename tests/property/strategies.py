"""Hypothesis strategies for valid messages of the CUP POS profile."""

import string

from hypothesis import strategies as st

from agent.wire.message import Message
from agent.wire.spec import FIELDS, FIXED, FieldDef

PRINTABLE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F))
CHINESE = "银联商户终端未登记中文"


def field_value(f: FieldDef) -> st.SearchStrategy:
    fixed = f.len_type == FIXED
    lo, hi = (f.max_len, f.max_len) if fixed else (0, f.max_len)
    if f.fmt == "b":
        return st.binary(min_size=lo, max_size=hi)
    if f.fmt == "n":
        return st.text(string.digits, min_size=lo, max_size=hi)
    if f.fmt == "z":
        return st.text(string.digits + "=", min_size=lo, max_size=hi)
    if f.charset == "gb18030":
        return st.text(PRINTABLE_ASCII + CHINESE, max_size=hi // 2)
    return st.text(PRINTABLE_ASCII, min_size=lo, max_size=hi)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    mti = draw(st.text(string.digits, min_size=4, max_size=4))
    numbers = draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=12))
    return Message(mti, {n: draw(field_value(FIELDS[n])) for n in sorted(numbers)})
