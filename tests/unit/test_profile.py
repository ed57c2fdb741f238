"""Wire profiles: the built-in CUP table, an acquirer's overrides from TOML, and their errors."""

from pathlib import Path

import pytest

from agent.config import ConfigError, load
from agent.wire.errors import DecodeError, EncodeError
from agent.wire.message import Message, decode_message, encode_message
from agent.wire.profile import CUP, ProfileError, load_profile
from agent.wire.spec import FIXED, LL, LLL


def write(folder: Path, text: str, name: str = "acquirer.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_built_in_profile_is_design_section_4() -> None:
    f = CUP.fields
    assert (f[22].fmt, f[22].max_len, f[22].len_type, f[22].justify) == ("n", 3, FIXED, "left")
    assert (f[23].justify, f[60].max_len, f[60].len_type) == ("right", 32, LLL)
    assert (f[2].len_type, f[2].justify, f[35].fmt) == (LL, "left", "z")
    assert (f[63].charset, f[64].fmt, f[64].max_len) == ("gb18030", "b", 8)
    assert sorted(f) == [2, 3, 4, 11, 12, 13, 14, 15, 22, 23, 25, 26, 32, 35, 36, 37, 38, 39,
                         41, 42, 44, 48, 49, 52, 53, 54, 55, 59, 60, 61, 62, 63, 64]  # fmt: skip
    assert (f[59].fmt, f[59].max_len, f[59].len_type) == ("b", 999, LLL)


def test_overrides_change_only_what_they_name(tmp_path) -> None:
    profile = load_profile(
        write(
            tmp_path,
            """
            name = "acquirer-x"
            [fields.22]
            justify = "right"
            [fields.60]
            max = 20
            [fields.63]
            charset = "gb2312"
            [fields.43]
            name = "merchant name and location"
            format = "ans"
            length = "fixed"
            max = 40
            charset = "gb2312"
            """,
        )
    )
    assert profile.name == "acquirer-x"
    assert profile.fields[22].justify == "right" and profile.fields[22].max_len == 3
    assert profile.fields[60].max_len == 20 and profile.fields[60].fmt == "n"
    assert profile.fields[63].charset == "gb2312"
    assert profile.fields[43].kind == "ans40"
    assert {n: f for n, f in profile.fields.items() if n not in (22, 43, 60, 63)} == {
        n: f for n, f in CUP.fields.items() if n not in (22, 60, 63)
    }
    # the codec follows the profile: 021 right-justified is 00 21, and 60 stops at 20 digits
    assert encode_message(Message("0200", {22: "021"}), profile)[10:] == b"\x00\x21"
    assert encode_message(Message("0200", {22: "021"}))[10:] == b"\x02\x10"
    with pytest.raises(EncodeError, match="field 60"):
        encode_message(Message("0200", {60: "1" * 21}), profile)
    merchant = Message("0200", {43: "银联测试商户"})
    encoded = encode_message(merchant, profile)
    assert encoded[10:] == "银联测试商户".encode("gb2312") + b" " * 28  # 40 bytes, space-padded
    assert decode_message(encoded, profile) == Message("0200", {43: "银联测试商户" + " " * 28})
    with pytest.raises(EncodeError, match="field 43: ans40 holds text that gb2312 cannot"):
        encode_message(Message("0200", {43: "€"}), profile)
    with pytest.raises(DecodeError, match="field 43"):
        decode_message(encode_message(merchant, profile))  # CUP has no field 43


def test_a_changed_length_takes_the_default_justification(tmp_path) -> None:
    profile = load_profile(write(tmp_path, '[fields.23]\nlength = "LL"\nmax = 3'))
    assert profile.fields[23].len_type == LL and profile.fields[23].justify == "left"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[fields.65]\nmax = 3", "[fields.65]: unknown field; this profile has fields 2 to 64"),
        ("[fields.1]\nmax = 3", "[fields.1]: unknown field"),
        ("[fields.x]\nmax = 3", "[fields.x]: unknown field"),
        ("[fields.60]\nmax = 1000", "field 60: max = 1000: a LLL field holds at most 999"),
        ("[fields.2]\nmax = 100", "field 2: max = 100: a LL field holds at most 99"),
        ("[fields.60]\nmax = 0", "field 60: max = 0: expected a whole number of 1 or more"),
        ("[fields.60]\nmax = '20'", "field 60: max = '20': expected a whole number"),
        ("[fields.60]\nmaximum = 20", "field 60: maximum = 20: unknown key; expected one of"),
        ("[fields.22]\njustify = 'centre'", "justify = 'centre': expected one of left, right"),
        ("[fields.41]\njustify = 'left'", "field 41: justify = 'left': only n and z fields"),
        ("[fields.4]\ncharset = 'gb2312'", "field 4: charset = 'gb2312': only an and ans"),
        ("[fields.63]\ncharset = 'utf-8'", "field 63: charset = 'utf-8': expected one of ascii"),
        ("[fields.60]\nformat = 'x'", "field 60: format = 'x': expected one of n, z, an, ans, b"),
        ("[fields.60]\nlength = 'LLLL'", "field 60: length = 'LLLL': expected one of fixed"),
        ("[fields.60]\nlength = [2]", "field 60: length = [2]: expected one of fixed, LL, LLL"),
        ("[fields.64]\nmax = 16", "field 64: max = 16: field 64 is the MAC and stays b8"),
        ("[fields.43]\nmax = 40", "field 43: format: the built-in profile has no such field"),
        ("[fields.60]\n", ""),  # an empty row changes nothing: accepted
        ("fields = 3", "fields: expected tables [fields.N]"),
        ("acquirer = 'x'", "unknown key 'acquirer'; expected one of name, fields"),
        ("name = ''", "name = '': expected a non-empty string"),
        ("[fields.60\n", "not valid TOML"),
    ],
)
def test_a_bad_profile_is_refused_naming_file_field_and_key(tmp_path, text, message) -> None:
    path = write(tmp_path, text)
    if not message:
        assert load_profile(path).fields == CUP.fields
        return
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_a_missing_profile_is_named(tmp_path) -> None:
    with pytest.raises(ProfileError, match=r"absent.toml: no such wire profile"):
        load_profile(tmp_path / "absent.toml")


def test_the_configuration_loads_its_profile_relative_to_itself(tmp_path) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", "[fields.60]\nmax = 20", "acquirer.toml")
    config_path = write(tmp_path / "etc", '[wire]\nprofile = "acquirer.toml"', "agent.toml")
    config = load(config_path, env={})
    assert config.wire.profile.name == "acquirer" and config.wire.profile.fields[60].max_len == 20
    assert load(write(tmp_path, "", "plain.toml"), env={}).wire.profile is CUP


def test_a_bad_profile_stops_the_configuration_naming_both_files(tmp_path) -> None:
    profile = write(tmp_path, "[fields.60]\nmax = 5000")
    config_path = write(tmp_path, f'[wire]\nprofile = "{profile}"', "agent.toml")
    with pytest.raises(ConfigError) as err:
        load(config_path, env={})
    text = str(err.value)
    assert text.startswith(f"{config_path}: wire.profile: {profile}: field 60: max = 5000")


def test_an_acquirer_can_narrow_or_retype_field_59(tmp_path) -> None:
    from agent.wire.field59 import has_a2
    from agent.wire.mask import mask_field

    narrow = load_profile(write(tmp_path, "[fields.59]\nmax = 100"))
    assert narrow.fields[59].kind == "b..100 LLL"
    usage = b"A4095" + b"7" * 95  # 100 bytes: fits
    assert decode_message(encode_message(Message("0200", {59: usage}), narrow), narrow)[59] == usage
    with pytest.raises(EncodeError, match="field 59"):
        encode_message(Message("0200", {59: usage + b"A4000"}), narrow)
    # an acquirer that declares 59 as text: the usages are read from its characters
    text = load_profile(write(tmp_path, '[fields.59]\nformat = "ans"', "text.toml"))
    message = decode_message(encode_message(Message("0200", {59: "A2000A4003123"}), text), text)
    assert message[59] == "A2000A4003123" and has_a2(message)
    assert mask_field(59, message[59]) == "A2=[] A4=123"
    with pytest.raises(ProfileError, match="field 59: max = 1000: a LLL field holds at most 999"):
        load_profile(write(tmp_path, "[fields.59]\nmax = 1000", "wide.toml"))
