"""Hypothesis strategies for valid messages of a wire profile (the built-in CUP one by default)."""

import string

from hypothesis import strategies as st

from agent.wire.message import Message
from agent.wire.profile import CUP, Profile
from agent.wire.spec import FIXED, FieldDef

PRINTABLE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F))
CHINESE = "银联商户终端未登记中文"


def field_value(f: FieldDef, encrypted_tracks: bool = False) -> st.SearchStrategy:
    fixed = f.len_type == FIXED
    lo, hi = (f.max_len, f.max_len) if fixed else (0, f.max_len)
    if f.fmt == "b":
        return st.binary(min_size=lo, max_size=hi)
    if f.fmt == "n":
        return st.text(string.digits, min_size=lo, max_size=hi)
    if f.fmt == "z":
        alphabet = "0123456789ABCDEF" if encrypted_tracks else string.digits + "="
        return st.text(alphabet, min_size=lo, max_size=hi)
    if f.charset != "ascii" and not fixed:
        return st.text(PRINTABLE_ASCII + CHINESE, max_size=hi // 2)
    return st.text(PRINTABLE_ASCII, min_size=lo, max_size=hi)


@st.composite
def messages(draw: st.DrawFn, profile: Profile = CUP) -> Message:
    mti = draw(st.text(string.digits, min_size=4, max_size=4))
    numbers = draw(st.sets(st.sampled_from(sorted(profile.fields)), max_size=12))
    fields: dict[int, str | bytes] = {}
    if 53 in numbers:
        fields[53] = draw(field_value(profile.fields[53]))
    encrypted = fields.get(53, "")[2:3] == "1"  # 53.3: tracks encrypted under the TDK
    for n in sorted(numbers - {53}):
        fields[n] = draw(field_value(profile.fields[n], encrypted))
    return Message(mti, dict(sorted(fields.items())))
