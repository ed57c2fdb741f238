"""Hypothesis strategies for valid messages of a wire profile (the built-in CUP one by default)."""

import string

from hypothesis import strategies as st

from agent.wire.field59 import DEVICE_TYPES, Field59, Usage, build_a2, build_a5
from agent.wire.message import Message
from agent.wire.profile import CUP, Profile
from agent.wire.spec import FIXED, FieldDef

PRINTABLE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F))
CHINESE = "银联商户终端未登记中文"
USAGE_TAG_CHARS = string.ascii_letters + string.digits

a2_values = st.builds(
    build_a2,
    st.sampled_from(sorted(DEVICE_TYPES)),
    st.text(PRINTABLE_ASCII, min_size=1, max_size=50),
    st.text(string.digits, min_size=6, max_size=6),
    st.text("0123456789ABCDEF", min_size=8, max_size=8),
    st.text(PRINTABLE_ASCII, max_size=10),
)
a5_values = st.dictionaries(
    st.sampled_from(["longitude", "latitude", "coordinate_system", "mcc", "mnc", "lac", "cid",
                     "signal", "cdma_sid", "cdma_nid", "cdma_bid", "cdma_signal"]),
    st.text(PRINTABLE_ASCII, max_size=12),
    min_size=1,
    max_size=4,
).map(build_a5)  # fmt: skip
digits_bytes = st.text(string.digits, min_size=1, max_size=30).map(str.encode)
usages = st.one_of(
    st.builds(Usage, st.just("A1"), st.binary(min_size=16, max_size=16)),
    st.builds(Usage, st.just("A2"), a2_values),
    st.builds(Usage, st.just("A3"), digits_bytes),
    st.builds(Usage, st.just("A4"), digits_bytes),
    st.builds(Usage, st.just("A5"), a5_values),
    # unknown usages, and known tags holding what they should not
    st.builds(Usage, st.text(USAGE_TAG_CHARS, min_size=2, max_size=2), st.binary(max_size=40)),
)
# A run of up to 6 usages is at most about 600 bytes: always within the field's 999.
field59_values = st.lists(usages, max_size=6).map(lambda u: Field59(tuple(u)).to_bytes())


def field_value(f: FieldDef, encrypted_tracks: bool = False) -> st.SearchStrategy:
    fixed = f.len_type == FIXED
    lo, hi = (f.max_len, f.max_len) if fixed else (0, f.max_len)
    if f.number == 59 and f == CUP.fields[59]:
        # mostly real runs of usages (A1-A5 and unknown ones), sometimes any bytes
        return st.one_of(field59_values, st.binary(max_size=hi))
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
