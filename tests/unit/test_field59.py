"""Field 59: the run of usages, the A2 and A5 sub-usages (DESIGN.md sections 4 and 17)."""

import pytest

from agent.wire.errors import DecodeError, EncodeError
from agent.wire.field59 import (
    A2_NAMES,
    A5_NAMES,
    Field59,
    SubUsage,
    Usage,
    a2_problem,
    build_a2,
    build_a5,
    build_subusages,
    find_usage,
    has_a2,
    parse_subusages,
    sub_usages,
    with_usage,
)
from agent.wire.message import Message, decode_message, encode_message

PIN_BLOCK = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
# DESIGN.md section 17: TUSN 0000020254004318 and factor 000052 give the ciphertext D60AF15D.
EXAMPLE_A2 = (
    b"01002" b"02"
    b"02016" b"0000020254004318"
    b"03006" b"000052"
    b"04008" b"D60AF15D"
    b"05008" b"1.0.0   "
)  # fmt: skip
LABEL = "field 59 (custom data (usages))"


def a2(**values: str) -> bytes:
    """An A2 with the example's sub-usages 01-04, some replaced; a value of ``-`` drops one."""
    items = {"01": "02", "02": "0000020254004318", "03": "000052", "04": "D60AF15D"}
    items.update(values)
    return build_subusages([(t, v) for t, v in items.items() if v != "-"], "A2")


# ------------------------------------------------------------------------------------ usages


def test_parse_keeps_order_unknown_usages_and_exact_bytes() -> None:
    data = (
        b"A1016" + PIN_BLOCK + b"Z9003\x00\xff\x01" + b"A2" + b"%03d" % len(EXAMPLE_A2) + EXAMPLE_A2
    )
    field = Field59.parse(data)
    assert field.tags == ("A1", "Z9", "A2")
    assert field.usages[1] == Usage("Z9", b"\x00\xff\x01")  # unknown, kept as it came
    assert field.find("A2") == Usage("A2", EXAMPLE_A2)
    assert field.find("A5") is None
    assert field.to_bytes() == data
    assert [u.name for u in field.usages] == [
        "SM4 PIN block",
        "unknown usage",
        "terminal hardware serial number",
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"A4000",  # an empty value
        b"A4012201805171234",
        b"a4003abc",  # an2 takes lower-case letters too
        b"99005hello" + b"A1016" + PIN_BLOCK,
        b"A4994" + b"7" * 994,  # the whole field: 999 bytes
    ],
)
def test_parse_then_build_is_byte_for_byte(data: bytes) -> None:
    assert Field59.parse(data).to_bytes() == data


def test_absent_field_is_no_usages() -> None:
    assert Field59.parse(None) == Field59()
    assert with_usage(None, "A4", b"123") == b"A4003123"
    assert find_usage(None, "A2") is None


def test_the_codec_carries_field_59_as_bytes() -> None:
    field = with_usage(b"A1016" + PIN_BLOCK, "A2", EXAMPLE_A2)
    message = Message("0200", {3: "000000", 59: field})
    encoded = encode_message(message)
    assert encoded[-len(field) - 2 :] == bytes.fromhex("0091") + field  # LLL in BCD: 091 bytes
    assert decode_message(encoded) == message


@pytest.mark.parametrize(
    ("data", "offset", "reason"),
    [
        (b"A4", 0, "2 bytes left where a usage starts; one needs at least 5 (tag an2 + length n3)"),
        (b"A4003abcA", 8, "1 byte left where a usage starts; one needs at least 5"),
        (b"A-003abc", 0, "the tag of the usage here is not 2 ASCII letters or digits (an2)"),
        (b"\xa1\xa2003abc", 0, "the tag of the usage here is not 2 ASCII letters or digits"),
        (b"A4003abcA2 03abc", 10, "usage A2: the length is not 3 ASCII digits (n3)"),
        (b"A40x3abc", 2, "usage A4: the length is not 3 ASCII digits (n3)"),
        (b"A4005abc", 2, "usage A4: length 005 runs past the end of the field (3 bytes left)"),
        (b"A1016" + PIN_BLOCK[:15], 2, "usage A1: length 016 runs past the end of the field "
         "(15 bytes left)"),
        (b"A4996" + b"7" * 996, 999, "1001 bytes, more than the 999 the field holds"),
    ],
)  # fmt: skip
def test_parse_errors_name_the_usage_and_the_offset(data: bytes, offset: int, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        Field59.parse(data)
    assert err.value.offset == offset
    assert err.value.field == 59
    assert str(err.value).startswith(f"at byte {offset}, {LABEL}: {reason}")


def test_parse_errors_never_show_the_bytes() -> None:
    with pytest.raises(DecodeError) as err:
        Field59.parse(b"A1017" + PIN_BLOCK)
    assert PIN_BLOCK.hex() not in str(err.value).lower()


def test_with_usage_appends_after_what_the_app_put_there() -> None:
    app = b"A1016" + PIN_BLOCK + b"Z9003xyz"
    field = with_usage(app, "A2", EXAMPLE_A2)
    assert field == app + b"A2065" + EXAMPLE_A2
    assert Field59.parse(field).tags == ("A1", "Z9", "A2")
    assert find_usage(field, "A2") == EXAMPLE_A2


def test_with_usage_refuses_a_field_that_does_not_parse() -> None:
    with pytest.raises(DecodeError, match="usage A1: length 016 runs past the end"):
        with_usage(b"A1016" + PIN_BLOCK[:8], "A2", EXAMPLE_A2)


def test_building_past_999_bytes_names_the_field() -> None:
    full = b"A4990" + b"7" * 990  # 995 bytes
    with pytest.raises(EncodeError) as err:
        with_usage(full, "A5", b"")
    assert str(err.value) == (
        f"{LABEL}: adding usage A5 (0 bytes) makes 1000 bytes, more than the 999 the field holds"
    )
    with pytest.raises(EncodeError, match=r"the usages A4, A5 take 1000 bytes, more than the 999"):
        Field59((Usage("A4", b"7" * 990), Usage("A5", b""))).to_bytes()


@pytest.mark.parametrize(
    ("tag", "value", "reason"),
    [
        ("A", b"", "usage tag 'A' is not 2 ASCII letters or digits"),
        ("A-", b"", "usage tag 'A-' is not 2 ASCII letters or digits"),
        ("\uff211", b"", "usage tag '\uff211' is not 2 ASCII letters or digits"),  # full-width A
        ("A4", b"7" * 1000, "usage A4: 1000 bytes of value, more than the 999 its 3-digit length"),
    ],
)
def test_a_usage_that_cannot_be_written_is_refused(tag: str, value: bytes, reason: str) -> None:
    with pytest.raises(EncodeError) as err:
        Usage(tag, value)
    assert str(err.value).startswith(f"{LABEL}: {reason}")


def test_a_usage_repr_shows_no_value() -> None:
    assert repr(Usage("A1", PIN_BLOCK)) == "Usage(tag='A1', 16 bytes)"
    assert PIN_BLOCK.hex() not in repr(Field59.parse(b"A1016" + PIN_BLOCK)).lower()


def test_has_a2() -> None:
    assert not has_a2(Message("0200", {3: "000000"}))
    assert not has_a2(Message("0200", {59: b"A1016" + PIN_BLOCK}))
    assert has_a2(Message("0200", {59: with_usage(b"A1016" + PIN_BLOCK, "A2", EXAMPLE_A2)}))
    assert has_a2(Message("0200", {59: "A2000"}))  # a profile that made 59 text
    with pytest.raises(DecodeError, match="usage A1: length 016 runs past"):
        has_a2(Message("0200", {59: b"A1016"}))  # cannot tell: a different finding from "none"


# ------------------------------------------------------------------------------------ sub-usages


def test_sub_usages_parse_and_build_in_order() -> None:
    items = parse_subusages(EXAMPLE_A2, "A2")
    assert [i.tag for i in items] == ["01", "02", "03", "04", "05"]
    assert items[4] == SubUsage("05", "1.0.0   ")
    assert build_subusages([(i.tag, i.value) for i in items], "A2") == EXAMPLE_A2
    assert parse_subusages(b"", "A5") == ()


@pytest.mark.parametrize(
    ("value", "offset", "reason"),
    [
        (b"0100", 0, "4 bytes left where a sub-usage starts; one needs at least 5 (tag n2 + "
         "length n3)"),
        (b"A1002ab", 0, "the tag of the sub-usage here is not 2 digits (n2)"),
        (b"0100202x002ab", 7, "the tag of the sub-usage here is not 2 digits (n2)"),
        (b"0100x02", 2, "sub-usage 01: the length is not 3 ASCII digits (n3)"),
        (b"01003ab", 2, "sub-usage 01: length 003 runs past the end of A5 (2 bytes left)"),
        (b"01003a\tb", 6, "sub-usage 01: the value holds a byte that is not printable ASCII"),
        (b"01002\xc3\xa9", 5, "sub-usage 01: the value holds a byte that is not printable ASCII"),
    ],
)  # fmt: skip
def test_sub_usage_parse_errors(value: bytes, offset: int, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        parse_subusages(value, "A5")
    assert str(err.value) == f"at byte {offset}, field 59 usage A5: {reason}"


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        ([("1", "x")], "sub-usage tag '1' is not 2 digits"),
        ([("AB", "x")], "sub-usage tag 'AB' is not 2 digits"),
        ([("01", "é")], "sub-usage 01: the value is not printable ASCII"),
        ([("01", "a\nb")], "sub-usage 01: the value is not printable ASCII"),
        ([("01", "7" * 1000)], "sub-usage 01: 1000 characters, more than the 999"),
    ],
)
def test_sub_usage_build_errors(items: list[tuple[str, str]], reason: str) -> None:
    with pytest.raises(EncodeError) as err:
        build_subusages(items, "A2")
    assert str(err.value).startswith(f"field 59 usage A2: {reason}")


# -------------------------------------------------------------------------------------------- A2


def test_build_a2_with_the_design_example() -> None:
    value = build_a2("02", "0000020254004318", "000052", "D60AF15D", "1.0.0")
    assert value == EXAMPLE_A2
    assert a2_problem(value) is None
    assert [i.tag for i in parse_subusages(value, "A2")] == list(A2_NAMES)


@pytest.mark.parametrize(
    ("version", "sent"),
    [("1.0.0", "1.0.0   "), ("0.9.0.dev3+g1a2b", "0.9.0.de"), ("", "        ")],
)
def test_build_a2_pads_or_clips_the_app_version_to_8(version: str, sent: str) -> None:
    value = build_a2("04", "0000990200000001", "123456", "0011AABB", version)
    assert parse_subusages(value, "A2")[4] == SubUsage("05", sent)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("07", "T", "000052", "D60AF15D", "v"), "A2 sub-usage 01 (device type) 07 is not a CUP"),
        (("02", "", "000052", "D60AF15D", "v"), "A2 sub-usage 02 (TUSN) is empty"),
        (("02", "T", "52", "D60AF15D", "v"), "A2 sub-usage 03 (random factor) has 2 characters"),
        (("02", "T", "000052", "d60af15d", "v"), "A2 sub-usage 04 (ciphertext) d60af15d has lower"),
        (
            ("02", "T", "000052", "D60AF15D", "版本"),
            "field 59 usage A2: sub-usage 05: the value is",
        ),
    ],
)
def test_build_a2_refuses_what_a_host_would_refuse(args: tuple[str, ...], reason: str) -> None:
    with pytest.raises(EncodeError) as err:
        build_a2(*args)
    assert err.value.field == "field 59 usage A2"
    assert reason in str(err.value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (a2(), None),
        (a2(**{"05": "1.0.0   "}), None),
        (a2(**{"06": "extra"}), None),  # sub-usages A2 does not define are not checked
        (a2(**{"02": "00000202" + "T" * 42}), None),
        *[(a2(**{"01": t, "02": f"000002{t}54004318"}), None) for t in ("01", "06", "08", "13")],
        # structure
        (EXAMPLE_A2[:-3], "A2 at byte 54: sub-usage 05: length 008 runs past the end of A2 "
         "(5 bytes left)"),
        (EXAMPLE_A2 + b"06", "A2 at byte 65: 2 bytes left where a sub-usage starts; one needs "
         "at least 5 (tag n2 + length n3)"),
        (b"1x002" + EXAMPLE_A2, "A2 at byte 0: the tag of the sub-usage here is not 2 digits (n2)"),
        (b"01 2a02", "A2 at byte 2: sub-usage 01: the length is not 3 ASCII digits (n3)"),
        (b"", "A2 has no sub-usage 01 (device type), 02 (TUSN), 03 (random factor), "
         "04 (ciphertext)"),
        (a2(**{"03": "-"}), "A2 has no sub-usage 03 (random factor)"),
        (a2() + b"01002" b"02" + b"01002" b"02", "A2 sub-usage 01 (device type) is there more "
         "than once"),
        # 01 device type
        (a2(**{"01": "2"}), "A2 sub-usage 01 (device type) '2' is not 2 digits"),
        (a2(**{"01": "0A"}), "A2 sub-usage 01 (device type) '0A' is not 2 digits"),
        (a2(**{"01": "07"}), "A2 sub-usage 01 (device type) 07 is not a CUP device type "
         "(01-06, 08-13)"),
        (a2(**{"01": "14"}), "A2 sub-usage 01 (device type) 14 is not a CUP device type "
         "(01-06, 08-13)"),
        # 02 TUSN
        (a2(**{"02": ""}), "A2 sub-usage 02 (TUSN) is empty"),
        (a2(**{"02": "T" * 51}), "A2 sub-usage 02 (TUSN) has 51 characters, more than 50"),
        (a2(**{"02": "SN12345"}), "A2 TUSN 'SN12345' does not begin with 6 manufacturer and 2 "
         "device-type digits"),
        (a2(**{"02": "00000202"}), "A2 TUSN '00000202' does not begin with 6 manufacturer and 2 "
         "device-type digits"),  # and no serial after them
        (a2(**{"02": "0000020454004318"}), "A2 TUSN 0000020454004318 names device type 04, "
         "sub-usage 01 says 02"),
        # 03 random factor: never quoted, it is PAN digits
        (a2(**{"03": "00052"}), "A2 sub-usage 03 (random factor) has 5 characters, "
         "expected 6 digits"),
        (a2(**{"03": "0000521"}), "A2 sub-usage 03 (random factor) has 7 characters, "
         "expected 6 digits"),
        (a2(**{"03": "00005X"}), "A2 sub-usage 03 (random factor) is not all digits"),
        # 04 ciphertext
        (a2(**{"04": "D60AF15"}), "A2 sub-usage 04 (ciphertext) has 7 characters, "
         "expected 8 upper-case hex digits"),
        (a2(**{"04": "d60af15d"}), "A2 sub-usage 04 (ciphertext) d60af15d has lower-case hex "
         "digits; acquirers compare the upper-case string"),
        (a2(**{"04": "D60aF15D"}), "A2 sub-usage 04 (ciphertext) D60aF15D has lower-case hex "
         "digits; acquirers compare the upper-case string"),
        (a2(**{"04": "D60AF15G"}), "A2 sub-usage 04 (ciphertext) 'D60AF15G' is not 8 hex digits"),
        # 05 application version
        (a2(**{"05": "1.0.0-rc1"}), "A2 sub-usage 05 (application version) has 9 characters, "
         "expected 8 (space-padded)"),
        (a2(**{"05": "1.0"}), "A2 sub-usage 05 (application version) has 3 characters, "
         "expected 8 (space-padded)"),
        # every problem, in order
        (a2(**{"01": "07", "02": "-", "04": "d60af15d"}),
         "A2 has no sub-usage 02 (TUSN); A2 sub-usage 01 (device type) 07 is not a CUP device "
         "type (01-06, 08-13); A2 sub-usage 04 (ciphertext) d60af15d has lower-case hex digits; "
         "acquirers compare the upper-case string"),
    ],
)  # fmt: skip
def test_a2_problem_says_precisely_what_is_wrong(value: bytes, problem: str | None) -> None:
    assert a2_problem(value) == problem


def test_a2_problem_never_quotes_the_random_factor() -> None:
    for factor in ("12345", "1234567", "12345X"):
        problem = a2_problem(a2(**{"03": factor}))
        assert problem is not None and factor not in problem


# -------------------------------------------------------------------------------------------- A5


def test_build_a5_in_the_order_given_by_name_or_number() -> None:
    value = build_a5(
        {
            "longitude": "121.4737",
            "latitude": "31.2304",
            "coordinate_system": "GCJ02",
            "mcc": "460",
            "04": "00",
            "lac": "6338",
            "cid": "10262",
            "signal": "-75",
        }
    )
    items = parse_subusages(value, "A5")
    assert [(i.tag, i.value) for i in items] == [
        ("01", "121.4737"),
        ("02", "31.2304"),
        ("05", "GCJ02"),
        ("03", "460"),
        ("04", "00"),
        ("06", "6338"),
        ("07", "10262"),
        ("08", "-75"),
    ]
    assert value.startswith(b"01008121.47370200731.230405005GCJ02")
    cdma = build_a5({"cdma_sid": "13824", "16": "1", "cdma_bid": "4", "cdma_signal": "-80"})
    assert [i.tag for i in parse_subusages(cdma, "A5")] == ["15", "16", "17", "18"]
    assert {A5_NAMES[i.tag] for i in parse_subusages(cdma, "A5")} == {
        "CDMA SID",
        "CDMA NID",
        "CDMA BID",
        "CDMA signal",
    }


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ({}, "no location sub-usages given"),
        ({"altitude": "5"}, "unknown location sub-usage 'altitude'; expected one of longitude"),
        ({"09": "5"}, "unknown location sub-usage '09'"),
        ({"longitude": "1", "01": "2"}, "sub-usage 01 (longitude) given twice, as 'longitude' "
         "and '01'"),
        ({"latitude": "北纬"}, "sub-usage 02: the value is not printable ASCII"),
    ],
)  # fmt: skip
def test_build_a5_errors(location: dict[str, str], reason: str) -> None:
    with pytest.raises(EncodeError) as err:
        build_a5(location)
    assert str(err.value).startswith(f"field 59 usage A5: {reason}")


def test_find_usage_and_sub_usages() -> None:
    field = with_usage(b"A1016" + PIN_BLOCK, "A2", EXAMPLE_A2)
    assert find_usage(field, "A2") == EXAMPLE_A2 and find_usage(None, "A5") is None
    assert sub_usages(EXAMPLE_A2) == {
        "01": "02",
        "02": "0000020254004318",
        "03": "000052",
        "04": "D60AF15D",
        "05": "1.0.0   ",
    }
    assert sub_usages(EXAMPLE_A2 + b"0100203")["01"] == "02"  # the first of a tag
    with pytest.raises(DecodeError, match="field 59 usage A5: sub-usage 01: length 009 runs past"):
        sub_usages(b"01009121.47", "A5")


def test_an_answer_is_kept_for_a_replay_without_its_pin_block() -> None:
    from agent.wire.field59 import without_pin

    voucher = b"A4020" + b"12345678901234567890"
    assert without_pin(b"A1016" + PIN_BLOCK + voucher) == voucher
    assert without_pin(b"A1016" + PIN_BLOCK) is None
    assert without_pin(b"A4005ab") is None  # does not parse: nothing of it is kept
