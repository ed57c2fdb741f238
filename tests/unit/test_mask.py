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
