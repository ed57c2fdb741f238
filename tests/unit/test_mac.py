"""MAC and KCV: hand-checkable steps, published vectors, and a cross-check against pycryptodome.

The reference implementations below follow DESIGN.md section 4 word by word and use pycryptodome's
DES, so the production code (on `cryptography`) is never checked against itself. pycryptodome has
no SM4: the SM4 reference uses `cryptography`'s bare block cipher, pinned first to the standard's
published example, so only the construction around it is the production code's own.
"""

import pytest
from Crypto.Cipher import DES, DES3
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from agent.wire.mac import (
    SM4_BLOCK,
    DesKey,
    Sm4Key,
    cup_ecb_mac,
    encode_with_mac,
    kcv,
    mab,
    mac_block,
    mac_matches,
    same_bytes,
    sm4_kcv,
    software_cup_mac,
    software_sm4_mac,
    tusn_ciphertext,
    x919_mac,
)
from agent.wire.message import Message, encode_message

SINGLE = bytes.fromhex("0123456789ABCDEF")
DOUBLE = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def reference_encrypt(key: bytes, block: bytes) -> bytes:
    if len(key) == 8:
        return DES.new(key, DES.MODE_ECB).encrypt(block)
    return DES3.new(key, DES3.MODE_ECB).encrypt(block)


def reference_sm4(key: bytes, block: bytes) -> bytes:
    return Cipher(algorithms.SM4(key), modes.ECB()).encryptor().update(block)


def reference_cup_mac(data: bytes, key: bytes, size: int = 8) -> bytes:
    # DESIGN.md: pad with 0x00 to a multiple of 8 (SM4: 16); R = XOR of all blocks; H = upper-case
    # hex of R; E1 = enc(H1); E2 = enc(E1 XOR H2); MAC = first 8 characters of the upper-case hex
    # of E2. enc is DES/3DES on 8-byte blocks, SM4 on 16-byte ones.
    encrypt = reference_sm4 if size == 16 else reference_encrypt
    while len(data) % size:
        data += b"\x00"
    r = bytes(size)
    for i in range(0, len(data), size):
        r = bytes(a ^ b for a, b in zip(r, data[i : i + size], strict=True))
    h = r.hex().upper().encode()
    e1 = encrypt(key, h[:size])
    e2 = encrypt(key, bytes(a ^ b for a, b in zip(e1, h[size:], strict=True)))
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


# --------------------------------------------------------------------------------------- SM4

SM4_EXAMPLE_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TUSN_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")


def test_sm4_primitive_matches_the_standards_example() -> None:
    # GB/T 32907-2016 appendix A, example 1: the key encrypting itself as plaintext.
    expected = "681EDF34D206965E86B3E94F536E4246"
    assert reference_sm4(SM4_EXAMPLE_KEY, SM4_EXAMPLE_KEY).hex().upper() == expected
    assert Sm4Key(SM4_EXAMPLE_KEY).encrypt(SM4_EXAMPLE_KEY).hex().upper() == expected
    assert Sm4Key(SM4_EXAMPLE_KEY).decrypt(bytes.fromhex(expected)) == SM4_EXAMPLE_KEY


def test_sm4_mac_block_is_xor_of_zero_padded_16_byte_blocks() -> None:
    data = b"\x01" * 16 + b"\x02" * 3
    assert mac_block(data, SM4_BLOCK) == bytes.fromhex("03030301010101010101010101010101")
    assert mac_block(b"", SM4_BLOCK) == bytes(16)


def test_sm4_mac_steps_by_hand() -> None:
    r = bytes.fromhex("03030301010101010101010101010101")
    h = b"03030301010101010101010101010101"  # 32 ASCII bytes: H[0:16] | H[16:32]
    e1 = reference_sm4(TUSN_KEY, h[:16])
    e2 = reference_sm4(TUSN_KEY, bytes(a ^ b for a, b in zip(e1, h[16:], strict=True)))
    expected = e2.hex().upper()[:8].encode()
    assert cup_ecb_mac(r, Sm4Key(TUSN_KEY).encrypt, SM4_BLOCK) == expected


@given(data=st.binary(max_size=300), key=st.binary(min_size=16, max_size=16))
def test_sm4_mac_equals_reference(data: bytes, key: bytes) -> None:
    assert software_sm4_mac(data, key) == reference_cup_mac(data, key, 16)


def test_sm4_keyed_part_needs_a_16_byte_r_and_key() -> None:
    with pytest.raises(ValueError, match="R must be 16 bytes, got 8"):
        cup_ecb_mac(bytes(8), Sm4Key(TUSN_KEY).encrypt, SM4_BLOCK)
    with pytest.raises(ValueError, match="SM4 keys are 16 bytes, got 8"):
        Sm4Key(bytes(8))


def test_sm4_kcv_is_the_key_over_16_zero_bytes() -> None:
    assert sm4_kcv(SM4_EXAMPLE_KEY) == reference_sm4(SM4_EXAMPLE_KEY, bytes(16))[:4]
    assert sm4_kcv(SM4_EXAMPLE_KEY).hex().upper() == "2677F46B"


def test_tusn_ciphertext_is_the_sm4_mac_of_tusn_and_factor() -> None:
    # DESIGN.md section 17's example (also a vector in tests/vectors/crypto.json)
    assert tusn_ciphertext(TUSN_KEY, "0000020254004318", "000052") == "D60AF15D"
    expected = reference_cup_mac(b"0000020254004318000052", TUSN_KEY, 16).decode()
    assert tusn_ciphertext(TUSN_KEY, "0000020254004318", "000052") == expected


def test_the_longer_of_module_and_disk_goes_first_by_their_running_averages() -> None:
    from agent.transaction.macs import LongerFirst

    order = LongerFirst()
    assert not order.module_first  # nothing seen: the disk first, the encoding beside its sync
    order.sync_took(0.0005)
    order.module_took(0.0032)  # a MAC on a 115200 line
    assert order.module_first
    for _ in range(2):  # a slow sync or two do not turn it (each counts 1/8), a few more do
        order.sync_took(0.0100)
        assert order.module_first
    order.sync_took(0.0100)
    assert not order.module_first
