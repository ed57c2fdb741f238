"""Generated messages round-trip through every field 62 layout and through profiles with
overrides; random bytes under such a profile still give only the project's decode error."""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.wire.errors import DecodeError, WireError
from agent.wire.frame import decode_frame
from agent.wire.message import Message, decode_message, encode_message
from agent.wire.profile import CUP, Profile, ProfileError, load_profile, profile_from_mapping
from agent.wire.spec import FIXED, LONGEST
from agent.wire.working_keys import LAYOUTS, issue_working_keys, parse_field62
from tests.property.strategies import messages
from tests.property.test_decode_fuzz import LAYOUTS as FRAME_LAYOUTS
from tests.property.test_decode_fuzz import LONG

fuzz = settings(max_examples=20_000 if LONG else 200, suppress_health_check=[HealthCheck.too_slow])
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


@st.composite
def profiles(draw: st.DrawFn) -> Profile:
    """The CUP profile with a few rows changed as an acquirer's file could change them."""
    rows: dict[int, dict[str, object]] = {}
    for number in draw(st.sets(st.sampled_from([n for n in CUP.fields if n != 64]), max_size=6)):
        f = CUP.fields[number]
        row: dict[str, object] = {}
        if f.len_type != FIXED:
            row["max"] = draw(st.integers(1, LONGEST[f.len_type]))
        if f.packed:
            row["justify"] = draw(st.sampled_from(["left", "right"]))
        if f.fmt in ("an", "ans"):
            row["charset"] = draw(st.sampled_from(["ascii", "gb18030"]))
        rows[number] = row
    return CUP.with_overrides(rows, "generated")


@fuzz
@given(data=st.data())
def test_messages_round_trip_through_a_profile_with_overrides(data: st.DataObject) -> None:
    profile = data.draw(profiles())
    message: Message = data.draw(messages(profile))
    assert decode_message(encode_message(message, profile), profile) == message


@fuzz
@given(profile=profiles(), data=st.binary(max_size=400))
def test_random_bytes_under_a_profile_raise_only_decode_error(profile: Profile, data) -> None:
    for layout in FRAME_LAYOUTS:
        try:
            decode_frame(data, layout, profile)
        except DecodeError as exc:
            assert 0 <= exc.offset <= len(data)
            assert str(exc).startswith(f"at byte {exc.offset}")


@fuzz
@given(layout=st.sampled_from(sorted(LAYOUTS)), seed=st.binary(min_size=48, max_size=48))
def test_issued_keys_round_trip_through_every_layout(layout: int, seed: bytes) -> None:
    shape = LAYOUTS[layout]
    clear = {name: seed[i * 16 : i * 16 + size] for i, (name, size) in enumerate(shape.keys)}
    issued = issue_working_keys(TMK, layout, clear)
    raw = issued.to_field62()
    assert len(raw) == shape.length
    assert parse_field62(raw, shape.scheme) == issued
    assert parse_field62(raw, shape.scheme, layout).to_field62() == raw


@fuzz
@given(scheme=st.sampled_from(["001", "003", "004"]), data=st.binary(max_size=80))
def test_any_field62_is_split_exactly_or_refused(scheme: str, data: bytes) -> None:
    try:
        keys = parse_field62(data, scheme)
    except WireError as exc:
        assert f"is {len(data)} bytes; scheme {scheme}" in str(exc)
        return
    assert keys.scheme == scheme and keys.to_field62() == data


row_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 1200), st.text(max_size=12), st.lists(st.none()),
    st.sampled_from(["n", "z", "an", "ans", "b", "fixed", "LL", "LLL", "left", "right", "ascii",
                     "gb2312", "utf-8"]),
)  # fmt: skip
row_keys = st.sampled_from(["name", "format", "length", "max", "justify", "charset", "x"])
raw_profiles = st.dictionaries(
    st.sampled_from(["name", "fields", "other"]),
    st.one_of(
        row_values,
        st.dictionaries(
            st.one_of(st.integers(0, 70).map(str), st.text(max_size=3)),
            st.one_of(row_values, st.dictionaries(row_keys, row_values, max_size=4)),
            max_size=4,
        ),
    ),
    max_size=3,
)


@fuzz
@given(raw=raw_profiles)
def test_any_profile_table_gives_a_profile_or_a_profile_error(raw) -> None:
    try:
        profile = profile_from_mapping(raw, "fuzz")
    except ProfileError:
        return
    for f in profile.fields.values():  # whatever was accepted can be encoded with
        assert 1 <= f.max_len <= 999 and (f.justify != "") is f.packed


@fuzz
@given(text=st.text(max_size=200))
def test_any_profile_file_gives_a_profile_or_a_profile_error(tmp_path_factory, text) -> None:
    path = tmp_path_factory.mktemp("profile") / "acquirer.toml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_profile(path)
    except ProfileError as exc:
        assert str(exc).startswith(str(path))


@fuzz
@given(data=st.data())
def test_a_decoded_message_changed_anyhow_encodes_as_if_built_anew(data: st.DataObject) -> None:
    """The agent passes most fields on in the bytes they came in (message.Wire): whatever is
    changed, removed or added since the decode, and under whichever profile it is encoded, the
    bytes are those of the same message encoded from scratch."""
    profile = data.draw(profiles())
    decoded = decode_message(encode_message(data.draw(messages(profile)), profile), profile)
    fresh: Message = data.draw(messages(profile))
    changed = Message(fresh.mti if data.draw(st.booleans()) else decoded.mti, {}, decoded.wire)
    for number in sorted(set(decoded.fields) | set(fresh.fields)):
        source = data.draw(st.sampled_from(["decoded", "fresh", "absent"]))
        if source == "decoded" and number in decoded.fields:
            changed.fields[number] = decoded.fields[number]
        elif source == "fresh" and number in fresh.fields:
            changed.fields[number] = fresh.fields[number]
    under = profile if data.draw(st.booleans()) else CUP
    anew = Message(changed.mti, dict(changed.fields))
    try:
        expected = encode_message(anew, under)
    except WireError as exc:
        with pytest.raises(WireError, match=re.escape(str(exc))):
            encode_message(changed, under)
        return
    assert encode_message(changed, under) == expected
