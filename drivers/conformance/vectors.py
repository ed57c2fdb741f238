"""Known answers under the documented test keys (DESIGN.md section 5), one set per key family.

Written out rather than computed: the check runs on a terminal, which has no cipher in software
(its module holds every key). tests/integration/test_module_check.py derives each value again
from the clear keys below, with the project's ciphers and with independent ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.module import KCV_BYTES, KeyFamily, MacAlgorithm, PinFormat

# The documented test TMK: slot 0 holds it as a DES key, slot 1 as an SM4 key.
TEST_TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
# The documented test TUSN key (SM4); the TUSN's random factor of section 17's worked example.
TEST_TUSN_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
TUSN_FACTOR = "000052"

# The working keys the check loads, in clear (the same digits for both families), and what it
# has the module work on: a 45-byte MAB (padding in both block sizes), ENCRYPT's data (two DES
# blocks, one SM4 block), and a PIN entry: the PIN a person types, the 12 PAN digits, seconds.
CLEAR_KEYS = {
    "PIK": bytes.fromhex("A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8"),
    "MAK": bytes.fromhex("C1C2C3C4C5C6C7C8D1D2D3D4D5D6D7D8"),
    "TDK": bytes.fromhex("E1E2E3E4E5E6E7E8F1F2F3F4F5F6F7F8"),
}
MAB = bytes(range(1, 46))
ENCRYPT_DATA = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
PIN = "123456"
PIN_PAN = "400000123456"
PIN_TIMEOUT = 30

_KEY_BYTES = 16 + KCV_BYTES  # one key of layouts 3 and 8 in field 62: ciphertext, KCV


@dataclass(frozen=True)
class KnownAnswers:
    """What a module holding the test TMK of ``family`` answers once it has loaded
    :data:`CLEAR_KEYS` from ``field62`` (layout ``layout``: PIK, MAK, TDK of 16 bytes)."""

    family: KeyFamily
    tmk_kcv: bytes
    layout: int
    field62: bytes
    kcvs: dict[str, bytes]
    mac_from_r: MacAlgorithm
    mac_over_mab: MacAlgorithm
    r: bytes  # R of MAB: the XOR of its blocks
    mac: bytes  # of MAB, both from R and over the MAB
    encrypted: bytes  # ENCRYPT_DATA under the TDK
    pin_format: PinFormat
    pin_block: bytes  # PIN at PIN_PAN, format 0 (SM4: padded with 0xFF), under the PIK

    def field62_with_wrong_mak_kcv(self) -> bytes:
        """Field 62 of other keys (the TDK as PIK) whose MAK KCV is off by one bit: a module
        answers 04 naming the MAK, and the PIK it holds shows that it stored none of them."""
        mak = self.field62[_KEY_BYTES : 2 * _KEY_BYTES]
        tdk = self.field62[2 * _KEY_BYTES :]
        return tdk + mak[:-1] + bytes([mak[-1] ^ 0x01]) + tdk


KNOWN_ANSWERS = {
    KeyFamily.DES: KnownAnswers(
        family=KeyFamily.DES,
        tmk_kcv=bytes.fromhex("08D7B4FB"),
        layout=3,
        field62=bytes.fromhex(
            "720D29FF7CEE3BD9BD6DCBEEC616646C7B217FA3"
            "7CD9C626C78B90C7B6CEB30CD0DA3046DB205DC0"
            "C7E443272917566B00490CB98FA7FFE0D32F8DB7"
        ),
        kcvs={
            "PIK": bytes.fromhex("7B217FA3"),
            "MAK": bytes.fromhex("DB205DC0"),
            "TDK": bytes.fromhex("D32F8DB7"),
        },
        mac_from_r=MacAlgorithm.CUP_ECB_FROM_R,
        mac_over_mab=MacAlgorithm.CUP_ECB,
        r=bytes.fromhex("0808080808262708"),
        mac=b"343119A0",
        encrypted=bytes.fromhex("D8F39D1A791B2DC5D0289B376903E753"),
        pin_format=PinFormat.ISO_FORMAT_0,
        pin_block=bytes.fromhex("045EFAD0C72572ED"),
    ),
    KeyFamily.SM4: KnownAnswers(
        family=KeyFamily.SM4,
        tmk_kcv=bytes.fromhex("2677F46B"),
        layout=8,
        field62=bytes.fromhex(
            "22B82094DDD42E327E69DDE2A866F1D076428347"
            "98AE189B06BE6D6E75305C620D566462EC17D38D"
            "0F3F9FCA49A06E31F690EE631ED47E236C43E4FD"
        ),
        kcvs={
            "PIK": bytes.fromhex("76428347"),
            "MAK": bytes.fromhex("EC17D38D"),
            "TDK": bytes.fromhex("6C43E4FD"),
        },
        mac_from_r=MacAlgorithm.SM4_FROM_R,
        mac_over_mab=MacAlgorithm.SM4,
        r=bytes.fromhex("3132333435363738393A3B3C3D101030"),
        mac=b"C116216A",
        encrypted=bytes.fromhex("3FC53C474292CF760821A7870C2931F6"),
        pin_format=PinFormat.SM4,
        pin_block=bytes.fromhex("A7D6E1EB1A36DF28CD3E7180DC3DF457"),
    ),
}
