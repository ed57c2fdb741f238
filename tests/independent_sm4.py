"""A second SM4, independent of the project's (gmssl, pure Python, not OpenSSL's), and the
constructions of DESIGN.md section 4 written out again on it: the tests check the simulator's SM4
KCVs, MACs and PIN blocks against these, never against the code under test."""

from __future__ import annotations

from gmssl.sm4 import SM4_DECRYPT, SM4_ENCRYPT, CryptSM4

BLOCK = 16
# GB/T 32907-2016 appendix A, example 1: the key encrypting itself.
STANDARD_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
STANDARD_CIPHERTEXT = bytes.fromhex("681EDF34D206965E86B3E94F536E4246")


def _crypt(key: bytes, data: bytes, mode: int) -> bytes:
    assert len(key) == BLOCK and data and len(data) % BLOCK == 0
    # padding_mode None: gmssl pads only for its PKCS7 and ZERO modes; whole blocks need none
    cipher = CryptSM4(mode, padding_mode=None)
    cipher.set_key(key, mode)
    return cipher.crypt_ecb(data)


def encrypt(key: bytes, data: bytes) -> bytes:
    """SM4 ECB over whole blocks."""
    return _crypt(key, data, SM4_ENCRYPT)


def decrypt(key: bytes, data: bytes) -> bytes:
    return _crypt(key, data, SM4_DECRYPT)


def kcv(key: bytes) -> bytes:
    """Section 4: the first 4 bytes of SM4 over 16 zero bytes."""
    return encrypt(key, bytes(BLOCK))[:4]


def cup_mac(mab: bytes, mak: bytes) -> bytes:
    """Section 4's SM4 MAC, step by step: zero-pad the MAB to 16, XOR the blocks into R, H the
    upper-case hex of R, E1 = SM4(H[0:16]), E2 = SM4(E1 XOR H[16:32]), the first 8 hex
    characters of E2."""
    padded = mab + bytes(-len(mab) % BLOCK)
    r = bytearray(BLOCK)
    for start in range(0, len(padded), BLOCK):
        for i in range(BLOCK):
            r[i] ^= padded[start + i]
    h = bytes(r).hex().upper().encode("ascii")
    e1 = encrypt(mak, h[:BLOCK])
    e2 = encrypt(mak, bytes(a ^ b for a, b in zip(e1, h[BLOCK:], strict=True)))
    return e2.hex().upper()[:8].encode("ascii")
