"""MACs of DESIGN.md section 4, split into a public part and a keyed part.

The public part (:func:`mac_block`) turns the message into R, the XOR of its blocks: 8 bytes for
DES/3DES, 16 for SM4. The keyed part (:func:`cup_ecb_mac`) needs only R and a block cipher of
that block size, so a card module can do it from 8 (or 16) bytes. The TUSN ciphertext of field 59
usage ``A2`` (section 17) is the SM4 construction over the TUSN and a random factor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.wire.message import BITMAP_BYTES, MTI_BYTES, Message, encode_message
from agent.wire.profile import CUP, Profile

BLOCK = 8  # DES and 3DES
SM4_BLOCK = 16
SM4_KEY_BYTES = 16
MAC_BYTES = 8
BlockEncrypt = Callable[[bytes], bytes]
# The keyed step as a card module offers it: R (8 or 16 bytes) in, field 64 (8 bytes) out.
BlockMac = Callable[[bytes], bytes]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _pad(data: bytes, block: int = BLOCK) -> bytes:
    return data + b"\x00" * (-len(data) % block)


def mab(encoded_message: bytes) -> bytes:
    """The MAC block: the encoded message (MTI onwards, bit 64 set) without the 8 MAC bytes."""
    bitmap_last = MTI_BYTES + BITMAP_BYTES - 1
    if len(encoded_message) < MTI_BYTES + BITMAP_BYTES + MAC_BYTES or not (
        encoded_message[bitmap_last] & 0x01
    ):
        raise ValueError("message has no field 64 to compute a MAC over")
    return encoded_message[:-MAC_BYTES]


def mac_block(data: bytes, block: int = BLOCK) -> bytes:
    """R: the XOR of the ``block``-byte blocks of ``data`` zero-padded to a multiple of
    ``block`` (8 for DES/3DES, 16 for SM4)."""
    padded = _pad(data, block)
    r = 0
    for i in range(0, len(padded), block):
        r ^= int.from_bytes(padded[i : i + block], "big")
    return r.to_bytes(block, "big")


def cup_ecb_mac(r: bytes, encrypt: BlockEncrypt, block: int = BLOCK) -> bytes:
    """The keyed part of the CUP ECB MAC: 8 ASCII hex characters from R. H, the upper-case hex
    of R, is two blocks: E1 = enc(H[:block]), E2 = enc(E1 XOR H[block:]), the MAC the first 8
    hex characters of E2. ``encrypt`` is a cipher of ``block`` bytes (DES: 8, SM4: 16)."""
    if len(r) != block:
        raise ValueError(f"R must be {block} bytes, got {len(r)}")
    h = r.hex().upper().encode("ascii")
    e1 = encrypt(h[:block])
    e2 = encrypt(_xor(e1, h[block:]))
    return e2.hex().upper()[:MAC_BYTES].encode("ascii")


def encode_with_mac(
    message: Message, mac_of_block: BlockMac, profile: Profile = CUP, block: int = BLOCK
) -> bytes:
    """Encode ``message`` with field 64 set to the MAC that ``mac_of_block`` computes from R,
    the XOR of ``block``-byte blocks (8: DES/3DES, 16: SM4)."""
    body, r = encode_for_mac(message, profile, block)
    return body + mac_of_block(r)


def encode_for_mac(
    message: Message, profile: Profile = CUP, block: int = BLOCK
) -> tuple[bytes, bytes]:
    """``message`` encoded up to its MAC, and R: the MAC of R (from the keyed part) completes
    it. Apart from :func:`encode_with_mac` for a caller that has the keyed part done elsewhere
    (a card module's round trip) while it goes on."""
    fields = dict(message.fields)
    fields[64] = bytes(MAC_BYTES)
    body = mab(encode_message(Message(message.mti, fields, message.wire), profile))
    return body, mac_block(body, block)


def mac_matches(encoded_message: bytes, mac_of_block: BlockMac, block: int = BLOCK) -> bool:
    """Whether field 64 of an encoded message is the MAC of the rest (R on ``block`` bytes)."""
    return carries_mac(encoded_message, mac_of_block(mac_block(mab(encoded_message), block)))


def carries_mac(encoded_message: bytes, mac: bytes) -> bool:
    """Whether field 64 of an encoded message (its last 8 bytes) is ``mac``."""
    return same_bytes(mac, encoded_message[-MAC_BYTES:])


def same_bytes(a: bytes, b: bytes) -> bool:
    """``a == b`` in a time that does not tell where they differ, so a forged answer cannot
    learn its MAC a byte at a time. What ``hmac.compare_digest`` does, but hmac imports hashlib,
    whose OpenSSL digests cost the service 0.7 MB of its 28 and are never used on the terminal."""
    if len(a) != len(b):  # the length of a MAC is no secret
        return False
    difference = 0
    for x, y in zip(a, b, strict=True):
        difference |= x ^ y
    return difference == 0


class DesKey:
    """Single (8-byte) or double-length (16-byte) DES key for block operations in ECB."""

    def __init__(self, key: bytes) -> None:
        if len(key) not in (8, 16):
            raise ValueError(f"DES keys are 8 or 16 bytes, got {len(key)}")
        self._single = _cipher(key[:8])
        self._ede = _cipher(key) if len(key) == 16 else self._single

    def encrypt(self, block: bytes) -> bytes:
        return self._ede.encryptor().update(block)

    def decrypt(self, block: bytes) -> bytes:
        return self._ede.decryptor().update(block)

    def encrypt_single(self, block: bytes) -> bytes:
        """Single DES under the key's first half (the X9.19 chain)."""
        return self._single.encryptor().update(block)


class SoftwareDesMissing(Exception):
    """The simulators' extra (``sim``: cryptography) is not installed."""


def require_software_des() -> None:
    """Import the DES implementation now, so a simulator without it stops at start with
    :class:`SoftwareDesMissing` rather than failing inside a request."""
    try:
        _cipher(bytes(8))
    except ModuleNotFoundError as exc:
        raise SoftwareDesMissing(
            f"the simulators need the Python package cryptography (43 or later), which is not "
            f"installed ({exc}): pip install 'pos-agent[sim]'. A terminal does without it: its "
            "card module computes every MAC and PIN block."
        ) from None


def _cipher(key: bytes) -> Any:
    # Imported here: the agent itself never holds a key (the card module MACs), and OpenSSL's
    # bindings cost a terminal several MB it has better use for. Simulators and tests pay.
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    # 24-byte keys (K|K|K for single DES, K1|K2|K1 for double length) avoid the two-key warning.
    full = key * 3 if len(key) == 8 else key + key[:8]
    return Cipher(TripleDES(full), modes.ECB())


def software_cup_mac(data: bytes, mak: bytes) -> bytes:
    """CUP ECB MAC over ``data`` (the MAB) with a clear MAK: what a card module computes."""
    return cup_ecb_mac(mac_block(data), DesKey(mak).encrypt)


class Sm4Key:
    """A 16-byte SM4 key for block operations in ECB (scheme 006, the TUSN key)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != SM4_KEY_BYTES:
            raise ValueError(f"SM4 keys are {SM4_KEY_BYTES} bytes, got {len(key)}")
        self._cipher = _sm4_cipher(key)

    def encrypt(self, block: bytes) -> bytes:
        return self._cipher.encryptor().update(block)

    def decrypt(self, block: bytes) -> bytes:
        return self._cipher.decryptor().update(block)


def _sm4_cipher(key: bytes) -> Any:
    # Imported here for the reason _cipher gives: a terminal's module holds the SM4 keys.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.SM4(key), modes.ECB())


def software_sm4_mac(data: bytes, key: bytes) -> bytes:
    """SM4 CUP MAC (scheme 006) over ``data`` with a clear key: 8 ASCII hex characters, as the
    module's MAC algorithm ``0x03`` computes it."""
    return cup_ecb_mac(mac_block(data, SM4_BLOCK), Sm4Key(key).encrypt, SM4_BLOCK)


def sm4_kcv(key: bytes) -> bytes:
    """An SM4 key's check value: the first 4 bytes of the key encrypting 16 zero bytes."""
    return Sm4Key(key).encrypt(bytes(SM4_BLOCK))[:4]


def tusn_ciphertext(key: bytes, tusn: str, factor: str) -> str:
    """Field 59 ``A2`` sub-usage ``04`` (DESIGN.md section 17): the SM4 CUP MAC under the TUSN
    key over the ASCII TUSN followed by the random factor, as 8 upper-case hex characters.
    The formats of ``tusn`` and ``factor`` are the callers' to check; this is only the cipher."""
    return software_sm4_mac((tusn + factor).encode("ascii"), key).decode("ascii")


def x919_mac(data: bytes, key: bytes) -> bytes:
    """ANSI X9.19 retail MAC: single-DES CBC under K1, last block decrypted with K2 and
    re-encrypted with K1. An 8-byte key gives the plain X9.9 CBC-MAC."""
    des = DesKey(key)
    k1 = des.encrypt_single
    chain = bytes(BLOCK)
    padded = _pad(data) or bytes(BLOCK)
    for i in range(0, len(padded), BLOCK):
        chain = k1(_xor(chain, padded[i : i + BLOCK]))
    if len(key) == 16:
        k2 = DesKey(key[8:])
        chain = k1(k2.decrypt(chain))
    return chain


def kcv(key: bytes) -> bytes:
    """Key check value: the first 4 bytes of the key encrypting 8 zero bytes."""
    return DesKey(key).encrypt(bytes(BLOCK))[:4]


KCV_BYTES = 4


@dataclass(frozen=True)
class CipherFamily:
    """A key family (DESIGN.md section 18) as the simulators use it: one construction for ECB,
    KCVs and the CUP MAC, the family giving only the cipher and its block (8 bytes for DES and
    3DES, 16 for SM4)."""

    name: str
    block: int
    cipher: Callable[[bytes], DesKey | Sm4Key]

    def kcv(self, key: bytes) -> bytes:
        """The first 4 bytes of ``key`` encrypting one block of zero bytes (section 4)."""
        return self.cipher(key).encrypt(bytes(self.block))[:KCV_BYTES]

    def mac_from_r(self, r: bytes, mak: bytes) -> bytes:
        """The keyed step of the CUP MAC (module algorithms ``0x81`` and ``0x83``)."""
        return cup_ecb_mac(r, self.cipher(mak).encrypt, self.block)

    def mac(self, data: bytes, mak: bytes) -> bytes:
        """The CUP MAC over the MAB ``data`` (module algorithms ``0x01`` and ``0x03``)."""
        return self.mac_from_r(mac_block(data, self.block), mak)


DES_FAMILY = CipherFamily("DES", BLOCK, DesKey)
SM4_FAMILY = CipherFamily("SM4", SM4_BLOCK, Sm4Key)
