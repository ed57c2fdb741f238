"""MAC and KCV: hand-checkable steps, published vectors, and a cross-check against pycryptodome.

The reference implementations below follow DESIGN.md section 4 word by word and use pycryptodome's
DES, so the production code (on `cryptography`) is never checked against itself.
"""

import pytest
from Crypto.Cipher import DES, DES3
from hypothesis import given
from hypothesis import strategies as st

from agent.wire.mac import (
    DesKey,
    cup_ecb_mac,
    encode_with_mac,
    kcv,
    mab,
    mac_block,
    mac_matches,
    same_bytes,
    software_cup_mac,
    x919_mac,
)
from agent.wire.message import Message, encode_message

SINGLE = bytes.fromhex("0123456789ABCDEF")
DOUBLE = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def reference_encrypt(key: bytes, block: bytes) -> bytes:
    if len(key) == 8:
        return DES.new(key, DES.MODE_ECB).encrypt(block)
    return DES3.new(key, DES3.MODE_ECB).encrypt(block)


def reference_cup_mac(data: bytes, key: bytes) -> bytes:
    # DESIGN.md: pad with 0x00 to a multiple of 8; R = XOR of all blocks; H = upper-case hex of R;
    # E1 = enc(H1); E2 = enc(E1 XOR H2); MAC = first 8 characters of the upper-case hex of E2.
    while len(data) % 8:
        data += b"\x00"
    r = bytes(8)
    for i in range(0, len(data), 8):
        r = bytes(a ^ b for a, b in zip(r, data[i : i + 8], strict=True))
    h = r.hex().upper().encode()
    e1 = reference_encrypt(key, h[:8])
    e2 = reference_encrypt(key, bytes(a ^ b for a, b in zip(e1, h[8:], strict=True)))
    return e2.hex().upper()[:8].encode()


def reference_x919(data: bytes, key: bytes) -> bytes:
    while len(data) % 8 or not data:
        data += b"\x00"
    chain = DES.new(key[:8], DES.MODE_CBC, iv=bytes(8)).encrypt(data)[-8:]
    if len(key) == 16:
        chain = DES.new(key[:8], DES.MODE_ECB).encrypt(
            DES.new(key[8:], DES.MODE_ECB).decrypt(chain)
        )
    return chain


def test_des_primitive_matches_published_vector() -> None:
    # FIPS 81 / the classic "Now is t" example.
    assert DesKey(SINGLE).encrypt(b"Now is t").hex().upper() == "3FA40E8A984D4815"


def test_kcv_matches_published_values() -> None:
    assert kcv(SINGLE).hex().upper() == "D5D44FF7"
    assert kcv(DOUBLE).hex().upper() == "08D7B4FB"


def test_mac_block_is_xor_of_zero_padded_blocks() -> None:
    data = b"\x01" * 8 + b"\x02" * 3
    # blocks 0101010101010101 and 0202020000000000 -> R = 0303030101010101
    assert mac_block(data) == bytes.fromhex("0303030101010101")
    assert mac_block(b"") == bytes(8)


def test_cup_mac_steps_by_hand() -> None:
    r = bytes.fromhex("0303030101010101")
    h = b"0303030101010101"  # upper-case hex of R as 16 ASCII bytes
    e1 = DES.new(SINGLE, DES.MODE_ECB).encrypt(h[:8])
    e2 = DES.new(SINGLE, DES.MODE_ECB).encrypt(bytes(a ^ b for a, b in zip(e1, h[8:], strict=True)))
    assert cup_ecb_mac(r, DesKey(SINGLE).encrypt) == e2.hex().upper()[:8].encode()


@given(data=st.binary(max_size=300), double=st.booleans())
def test_cup_mac_equals_reference(data: bytes, double: bool) -> None:
    key = DOUBLE if double else SINGLE
    assert software_cup_mac(data, key) == reference_cup_mac(data, key)


@given(data=st.binary(max_size=300), key=st.binary(min_size=16, max_size=16))
def test_cup_mac_equals_reference_for_any_double_key(data: bytes, key: bytes) -> None:
    if key[:8] == key[8:]:
        key = key[:8] + bytes(b ^ 0xFF for b in key[8:])  # pycryptodome rejects degenerate 3DES
    assert software_cup_mac(data, key) == reference_cup_mac(data, key)


@given(data=st.binary(max_size=300), double=st.booleans())
def test_x919_equals_reference(data: bytes, double: bool) -> None:
    key = DOUBLE if double else SINGLE
    assert x919_mac(data, key) == reference_x919(data, key)


def test_keyed_part_needs_only_r() -> None:
    with pytest.raises(ValueError, match="R must be 8 bytes"):
        cup_ecb_mac(b"short", DesKey(SINGLE).encrypt)


def test_des_key_length_is_checked() -> None:
    with pytest.raises(ValueError, match="8 or 16 bytes, got 24"):
        DesKey(bytes(24))


def _macer(key: bytes):
    des = DesKey(key)
    return lambda r: cup_ecb_mac(r, des.encrypt)


def test_encode_with_mac_and_verify() -> None:
    message = Message("0200", {3: "000000", 4: "000000000100", 11: "000001", 41: "12345678"})
    encoded = encode_with_mac(message, _macer(DOUBLE))
    assert encoded[-8:] == reference_cup_mac(encoded[:-8], DOUBLE)
    assert mac_matches(encoded, _macer(DOUBLE))
    tampered = bytearray(encoded)
    tampered[12] ^= 0x01  # one bit of the amount
    assert not mac_matches(bytes(tampered), _macer(DOUBLE))
    assert not mac_matches(encoded, _macer(SINGLE))


@given(st.binary(min_size=8, max_size=8), st.integers(0, 7), st.integers(1, 255))
def test_same_bytes_is_equality(mac: bytes, where: int, flip: int) -> None:
    assert same_bytes(mac, bytes(mac))
    other = bytearray(mac)
    other[where] ^= flip  # wrong in the first byte, the last, or between
    assert not same_bytes(mac, bytes(other))
    assert not same_bytes(mac, mac[:-1]) and not same_bytes(mac[:-1], mac)
    assert same_bytes(b"", b"")


def test_mab_requires_field_64() -> None:
    without = encode_message(Message("0800", {11: "000001"}))
    with pytest.raises(ValueError, match="no field 64"):
        mab(without)
