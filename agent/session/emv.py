"""What the CA public key and IC parameter downloads carry (DESIGN.md section 16): TLV lists in
parts, CA keys checked against their SHA-1 (国密 SM2 keys against their SM3), AIDs with their
parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.session import tlv
from agent.wire.errors import WireError

# The first byte of a list answer (0820/372, 0820/382) and of a key/AID answer (0800/370, 380)
NONE, LAST, MORE = b"0", b"1", b"2"
RID, INDEX, EXPIRY = "9F06", "9F22", "DF05"
CA_KEY_TAGS = ("9F06", "9F22", "DF05", "DF06", "DF07", "DF02", "DF04", "DF03")
AID = "9F06"
CONTACTLESS_TAGS = tuple(f"FF80{n:02X}" for n in range(0x54, 0x5E))  # FF8054-FF805D


class DownloadDataError(WireError):
    """Download data that is malformed or fails its check."""


def list_part(field62: bytes) -> tuple[bool, list[list[tuple[str, bytes]]]]:
    """One answer of a list (CA keys or AIDs): whether more parts follow, and the entries, each
    the TLVs from one 9F06 to the next."""
    if not field62 or field62[:1] not in (NONE, LAST, MORE):
        first = field62[:1].hex().upper() or "nothing"
        raise DownloadDataError(f"a list answer begins with 0, 1 or 2, not {first}")
    if field62[:1] == NONE:
        return False, []
    entries: list[list[tuple[str, bytes]]] = []
    for tag, value in tlv.parse(field62[1:]):
        if tag == RID:
            entries.append([])
        if not entries:
            raise DownloadDataError(f"list entry begins with {tag}, not 9F06")
        entries[-1].append((tag, value))
    return field62[:1] == MORE, entries


def one_item(field62: bytes) -> list[tuple[str, bytes]]:
    """The TLVs of an 0810 to 0800/370 or 380: ``1`` then the TLVs."""
    if field62[:1] != LAST:
        raise DownloadDataError(
            f"the answer begins with {field62[:1].hex().upper() or 'nothing'}, not 31 ('1')"
        )
    return tlv.parse(field62[1:])


@dataclass(frozen=True)
class CaKey:
    rid: str
    index: str
    tags: dict[str, str]  # every TLV as received, hex

    def to_json(self) -> dict[str, Any]:
        return {
            "rid": self.rid,
            "index": self.index,
            "expiry": self.tags.get(EXPIRY),
            "tags": self.tags,
        }


# DF06, the hash algorithm of DF03: SHA-1 for RSA keys, SM3 for the 国密 (SM2) keys of 0800/373
HASHES = {b"\x01": "sha1", b"\x07": "sm3"}
SM2 = b"\x04"  # DF07 of an SM2 key, whose public key (DF02) has no exponent (DF04) to it


def ca_key(items: list[tuple[str, bytes]]) -> CaKey:
    """A CA public key from its TLVs; refused unless DF03 is the hash DF06 names (SHA-1 when
    absent) of RID | index | modulus | exponent (an SM2 key's exponent may be absent)."""
    tags = dict(items)
    needed = ("9F06", "9F22", "DF02", "DF03") + (() if tags.get("DF07") == SM2 else ("DF04",))
    missing = [tag for tag in needed if tag not in tags]
    if missing:
        raise DownloadDataError(f"CA key lacks {', '.join(missing)}")
    import hashlib  # here: it loads OpenSSL's digests (0.7 MB), and CA key downloads are rare

    rid, index = tags["9F06"].hex().upper(), tags["9F22"].hex().upper()
    algorithm = HASHES.get(tags.get("DF06", b"\x01"))
    if algorithm is None:
        raise DownloadDataError(f"CA key {rid}/{index}: unknown hash algorithm DF06 "
                                f"{tags['DF06'].hex().upper()}")  # fmt: skip
    try:
        digest = hashlib.new(algorithm, rid_index_key(tags)).digest()
    except ValueError:  # an OpenSSL built without SM3
        raise DownloadDataError(
            f"CA key {rid}/{index}: its DF03 is an {algorithm.upper()} this system cannot compute"
        ) from None
    if digest != tags["DF03"]:
        raise DownloadDataError(
            f"CA key {rid}/{index}: DF03 {tags['DF03'].hex().upper()} is not its "
            f"{'SHA-1' if algorithm == 'sha1' else 'SM3'} {digest.hex().upper()}"
        )
    return CaKey(rid, index, {tag: value.hex().upper() for tag, value in items})


def rid_index_key(tags: dict[str, bytes]) -> bytes:
    """What DF03 is the hash of: RID | index | modulus | exponent (none for an SM2 key)."""
    return tags["9F06"] + tags["9F22"] + tags["DF02"] + tags.get("DF04", b"")


def aid_parameters(items: list[tuple[str, bytes]]) -> dict[str, Any]:
    tags = dict(items)
    if AID not in tags:
        raise DownloadDataError("IC parameters lack the AID (9F06)")
    return {"aid": tags[AID].hex().upper(), "tags": {t: v.hex().upper() for t, v in items}}


def contactless(field62: bytes) -> dict[str, str]:
    """The contactless (non-PIN) parameters: TLVs FF8054-FF805D (others kept as well)."""
    items = tlv.parse(field62)
    if not items:
        raise DownloadDataError("the contactless parameter answer carries no TLVs")
    return {tag: value.hex().upper() for tag, value in items}
