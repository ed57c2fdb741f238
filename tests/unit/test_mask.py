import pytest

from agent.wire.mask import mask_field, mask_icc, mask_pan, masked_fields
from agent.wire.message import Message


def tlv(tag: str, value: bytes) -> bytes:
    return bytes.fromhex(tag) + bytes([len(value)]) + value


@pytest.mark.parametrize(
    ("pan", "shown"),
    [
        ("6217001234567890123", "621700*********0123"),
        ("4111111111111111", "411111******1111"),
        ("1234567890123", "123456***0123"),
        ("123456789012", "************"),  # too short to show 6 + 4
        ("", ""),
    ],
)
def test_mask_pan(pan: str, shown: str) -> None:
    assert mask_pan(pan) == shown


def test_track_1_an_extended_pan_and_a_packed_pan_are_never_shown() -> None:
    """Whatever an acquirer's profile or an app puts there: track 1 (45) carries the
    cardholder's name with the PAN, 34 an extended PAN, and a field 2 packed two digits to a
    byte is a PAN all the same."""
    message = Message(
        "0200",
        {
            2: bytes.fromhex("6217001234567890123F"),
            34: "6217001234567890123",
            45: "B6217001234567890123^ZHANG/SAN^28121010000000000000",
        },
    )
    shown = masked_fields(message)
    assert shown[2] == "621700**********123F"
    assert shown[34] == "<extended PAN removed, 19 characters>"
    assert shown[45] == "<track 1 removed, 51 characters>"
    text = " ".join(shown.values())
    for secret in ("12345678", "ZHANG"):
        assert secret not in text


def test_secret_fields_are_removed_with_only_their_length() -> None:
    message = Message(
        "0200",
        {
            2: "6217001234567890123",
            14: "2812",
            35: "6217001234567890123=28121010000000000",
            36: "996217001234567890123=156",
            52: bytes.fromhex("1122334455667788"),
            62: bytes(40),
            41: "10000001",
        },
    )
    shown = masked_fields(message)
    assert shown[2] == "621700*********0123"
    assert shown[14] == "<expiry removed, 4 characters>"
    assert shown[35] == "<track 2 removed, 37 characters>"
    assert shown[36] == "<track 3 removed, 25 characters>"
    assert shown[52] == "<PIN block removed, 8 bytes>"
    assert shown[62] == "<key material removed, 40 bytes>"
    assert shown[41] == "10000001"
    text = " ".join(shown.values())
    for secret in ("6217001234567890123", "2812", "1122334455667788", "28121010"):
        assert secret not in text


def test_icc_secret_tags_removed_pan_masked_rest_kept() -> None:
    data = (
        tlv("9F26", bytes.fromhex("AABBCCDDEEFF0011"))
        + tlv("5A", bytes.fromhex("6217001234567890123F"))
        + tlv("57", bytes.fromhex("6217001234567890123D28121010000000000F"))
        + tlv("5F20", b"ZHANG/SAN")
        + tlv("70", tlv("9F1F", b"1234567890") + tlv("9F36", b"\x00\x01"))
        + b"\x00\x00"  # padding between objects
        + tlv("9F02", bytes.fromhex("000000001234"))
    )
    shown = mask_icc(data)
    assert shown == (
        "9F26=AABBCCDDEEFF0011 5A=621700*********0123 57=<secret removed, 19 bytes> "
        "5F20=<secret removed, 9 bytes> 70=[9F1F=<secret removed, 10 bytes> 9F36=0001] "
        "9F02=000000001234"
    )


def test_icc_long_form_length() -> None:
    data = bytes.fromhex("9F10") + b"\x81\x02" + b"\x01\x02"
    assert mask_icc(data) == "9F10=0102"


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("57136217001234567890123D2812"),  # value truncated
        bytes.fromhex("9F"),  # tag truncated
        bytes.fromhex("5A"),  # length missing
        bytes.fromhex("5A83000001"),  # 3-byte length form is not used in field 55
    ],
)
def test_icc_that_is_not_tlv_is_removed_whole(data: bytes) -> None:
    unit = "byte" if len(data) == 1 else "bytes"
    assert mask_icc(data) == f"<IC data that is not valid TLV removed, {len(data)} {unit}>"


def test_other_binary_fields_show_as_hex() -> None:
    assert mask_field(64, b"\x01\xab") == "01AB"


def test_the_extended_cardholder_name_and_id_number_are_removed() -> None:
    """9F0B (cardholder name extended) and 9F61 (the cardholder's ID number) never reach the
    journal or ``agent decode``."""
    data = (
        tlv("9F0B", "张三丰".encode()) + tlv("9F61", b"110101199001011234") + tlv("9F36", b"\x01")
    )
    shown = mask_icc(data)
    assert shown == ("9F0B=<secret removed, 9 bytes> 9F61=<secret removed, 18 bytes> 9F36=01")


# ---------------------------------------------------------------------------------- field 59

SM4_PIN_BLOCK = bytes.fromhex("8899AABBCCDDEEFF0011223344556677")
A2_VALUE = (
    b"01002" b"02" b"02016" b"0000020254004318" b"03006" b"000052" b"04008" b"D60AF15D"
    b"05008" b"1.0.0   "
)  # fmt: skip


def test_field59_pin_block_is_removed_like_field_52() -> None:
    field = b"A1016" + SM4_PIN_BLOCK + b"A4006123456"
    message = Message("0200", {52: bytes(8), 59: field})
    shown = "A1=<PIN block removed, 16 bytes> A4=123456"
    assert mask_field(59, field) == shown
    assert masked_fields(message)[59] == shown
    assert repr(message) == (
        "Message(mti='0200', fields={52: '<PIN block removed, 8 bytes>', 59: " + repr(shown) + "})"
    )
    for text in (shown, repr(message)):
        assert SM4_PIN_BLOCK.hex().upper() not in text.upper()


def test_field59_a2_and_a5_are_shown_with_the_random_factor_masked() -> None:
    a5 = b"01008121.47370200731.230405005GCJ02"
    field = b"A2065" + A2_VALUE + b"A5035" + a5
    assert mask_field(59, field) == (
        'A2=[01=02 02=0000020254004318 03=**0052 04=D60AF15D 05="1.0.0   "] '
        "A5=[01=121.4737 02=31.2304 05=GCJ02]"
    )


def test_field59_qr_code_is_masked_like_a_pan_and_unknown_usages_removed() -> None:
    field = b"A3019" + b"6225880112345678901" + b"Z9004abcd" + b"A3004\xff\xfe\xfd\xfc"
    assert mask_field(59, field) == (
        "A3=622588*********8901 Z9=<unknown usage removed, 4 bytes> "
        "A3=<QR payment code removed, 4 bytes>"
    )


def test_field59_values_that_need_it_are_quoted_or_hex() -> None:
    field = b"A4005a b=c" + b"A4000" + b"A4002\x00\x01" + b"A4004[0x]" + b"A40040x12"
    assert mask_field(59, field) == 'A4="a b=c" A4="" A4=0x0001 A4="[0x]" A4="0x12"'


def test_field59_broken_a2_is_removed_a_broken_a5_shown() -> None:
    field = b"A2008" + b"03006000" + b"A5005" + b"01xyz"
    assert mask_field(59, field) == "A2=<A2 that does not parse removed, 8 bytes> A5=01xyz"


@pytest.mark.parametrize(
    "field",
    [
        b"A1017" + SM4_PIN_BLOCK,  # the length runs past the end
        b"A1016" + SM4_PIN_BLOCK + b"A4",  # a tail that is no usage
        b"\x00\x01016" + SM4_PIN_BLOCK,  # no tag
    ],
)
def test_field59_that_does_not_parse_is_removed_whole(field: bytes) -> None:
    assert mask_field(59, field) == (
        f"<field 59 that does not parse as usages removed, {len(field)} bytes>"
    )


def test_field59_as_text_under_an_acquirer_profile() -> None:
    assert mask_field(59, "A4003123") == "A4=123"
    assert mask_field(59, "A4003一二三") == (
        "<field 59 that does not parse as usages removed, 8 characters>"
    )
