"""Field 62 of a successful 0810: working keys encrypted under the TMK, each with its KCV.

Hosts lay the keys out in one of eight ways (DESIGN.md section 4): seven of DES/3DES keys, one
(scheme 006) of SM4 keys. The agent recognises the layout from the scheme it asked for (60.3) and
the length it received, or takes the one configured, and tells the card module which it is. The
agent never decrypts the keys: it passes field 62 to the module and keeps only the KCVs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.wire.errors import WireError

KCV_BYTES = 4
MAK_PAD_BYTES = 8  # layouts 6 and 7: an 8-byte MAK followed by 8 zero bytes
# 60.3 of a sign-in: single DES, double length, double length with TDK, SM4 with TDK
SCHEMES = ("001", "003", "004", "006")


@dataclass(frozen=True)
class KeyLayout:
    """One layout of field 62: the keys it carries, their lengths, the scheme it belongs to."""

    number: int
    scheme: str  # 60.3 of the sign-in that gets this layout
    keys: tuple[tuple[str, int], ...]  # (name, clear key length) in field order
    padded_mak: bool = False
    sm4: bool = False  # SM4 keys under an SM4 TMK, with SM4 KCVs; else DES/3DES

    def stored_length(self, name: str, length: int) -> int:
        """Bytes one key takes in field 62 before its KCV."""
        return length + (MAK_PAD_BYTES if self.padded_mak and name == "MAK" else 0)

    @property
    def length(self) -> int:
        return sum(self.stored_length(n, k) + KCV_BYTES for n, k in self.keys)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.keys)

    def key_length(self, name: str) -> int:
        return dict(self.keys)[name]

    def describe(self) -> str:
        keys = ", ".join(
            f"{n} {k}" + (" + 8 zero bytes" if self.padded_mak and n == "MAK" else "")
            for n, k in self.keys
        )
        cipher = "SM4 " if self.sm4 else ""
        return f"layout {self.number} (scheme {self.scheme}, {self.length} bytes: {cipher}{keys})"


LAYOUTS: dict[int, KeyLayout] = {
    layout.number: layout
    for layout in (
        KeyLayout(1, "001", (("PIK", 8), ("MAK", 8))),
        KeyLayout(2, "003", (("PIK", 16), ("MAK", 16))),
        KeyLayout(3, "004", (("PIK", 16), ("MAK", 16), ("TDK", 16))),
        KeyLayout(4, "003", (("PIK", 16), ("MAK", 8))),
        KeyLayout(5, "004", (("PIK", 16), ("MAK", 8), ("TDK", 16))),
        KeyLayout(6, "003", (("PIK", 16), ("MAK", 8)), padded_mak=True),
        KeyLayout(7, "004", (("PIK", 16), ("MAK", 8), ("TDK", 16)), padded_mak=True),
        KeyLayout(8, "006", (("PIK", 16), ("MAK", 16), ("TDK", 16)), sm4=True),
    )
}
# The layout a host of each scheme sends unless it says otherwise (the full-length keys).
DEFAULT_LAYOUT = {"001": 1, "003": 2, "004": 3, "006": 8}


def layouts_of(scheme: str) -> list[KeyLayout]:
    if scheme not in SCHEMES:
        raise WireError(f"unknown key scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    return [layout for layout in LAYOUTS.values() if layout.scheme == scheme]


def key_layout(number: int) -> KeyLayout:
    try:
        return LAYOUTS[number]
    except KeyError:
        raise WireError(f"unknown field 62 layout {number}; expected 1 to {len(LAYOUTS)}") from None


@dataclass(frozen=True)
class EncryptedKey:
    """One working key of field 62, still under the TMK, and its KCV."""

    name: str  # "PIK", "MAK" or "TDK"
    ciphertext: bytes = field(repr=False)  # the key under the TMK (8 or 16 bytes), ECB
    kcv: bytes
    padding: bytes = field(default=b"", repr=False)  # what follows an 8-byte MAK in 6/7


@dataclass(frozen=True)
class WorkingKeys:
    """The working keys of a sign-in's field 62, as its layout reads them."""

    layout: KeyLayout
    keys: tuple[EncryptedKey, ...]

    @property
    def scheme(self) -> str:
        return self.layout.scheme

    def key(self, name: str) -> EncryptedKey:
        """The key called ``name`` (PIK, MAK, TDK); ``KeyError`` when the layout has none."""
        for key in self.keys:
            if key.name == name:
                return key
        raise KeyError(name)

    def kcvs(self) -> dict[str, str]:
        """KCVs by key name, as upper-case hex: what the journal keeps of a sign-in."""
        return {key.name: key.kcv.hex().upper() for key in self.keys}

    def to_field62(self) -> bytes:
        """Field 62 exactly as the host laid it out."""
        return b"".join(key.ciphertext + key.padding + key.kcv for key in self.keys)


def recognise(data: bytes, scheme: str, forced: int = 0) -> KeyLayout:
    """The layout of ``data`` for a sign-in of ``scheme``; ``forced`` (1-8) skips the guess.

    Layouts 2/6 and 3/7 share a length: 6/7 when bytes 8-15 of the MAK's ciphertext are zero.
    """
    candidates = layouts_of(scheme)
    if forced:
        layout = key_layout(forced)
        if layout.scheme != scheme:
            raise WireError(
                f"field 62 layout {forced} belongs to scheme {layout.scheme}, not {scheme}"
            )
        candidates = [layout]
    fitting = [layout for layout in candidates if layout.length == len(data)]
    if not fitting:
        expected = ", ".join(f"{layout.length} (layout {layout.number})" for layout in candidates)
        raise WireError(
            f"field 62 (working keys) is {len(data)} bytes; scheme {scheme} "
            f"{'with' if forced else 'has'} {expected}"
        )
    if len(fitting) == 1:
        return fitting[0]
    padded = next(layout for layout in fitting if layout.padded_mak)
    plain = next(layout for layout in fitting if not layout.padded_mak)
    mak_at = padded.stored_length("PIK", padded.key_length("PIK")) + KCV_BYTES
    tail = data[mak_at + 8 : mak_at + 8 + MAK_PAD_BYTES]
    return padded if tail == bytes(MAK_PAD_BYTES) else plain


def parse_field62(data: bytes, scheme: str, forced: int = 0) -> WorkingKeys:
    """Split field 62 by its layout; raises :class:`WireError` naming length and scheme."""
    layout = recognise(data, scheme, forced)
    keys = []
    position = 0
    for name, length in layout.keys:
        stored = layout.stored_length(name, length)
        keys.append(
            EncryptedKey(
                name,
                data[position : position + length],
                data[position + stored : position + stored + KCV_BYTES],
                data[position + length : position + stored],
            )
        )
        position += stored + KCV_BYTES
    return WorkingKeys(layout, tuple(keys))


def issue_working_keys(tmk: bytes, layout: int, clear: dict[str, bytes]) -> WorkingKeys:
    """Encrypt clear working keys under ``tmk`` (ECB) with their KCVs: what a host puts in 62.
    The layout says the cipher: 3DES (DES for an 8-byte TMK), or SM4 for layout 8.

    ``clear`` maps each key name of the layout to a key of the layout's length.
    """
    # simulators and tests only: a terminal's module holds the TMK (cryptography, lazily)
    from agent.wire.mac import DES_FAMILY, SM4_FAMILY

    shape = key_layout(layout)
    family = SM4_FAMILY if shape.sm4 else DES_FAMILY
    encrypt = family.cipher(tmk).encrypt  # ECB: each block of the key on its own
    keys = []
    for name, length in shape.keys:
        key = clear[name]
        if len(key) != length:
            raise WireError(f"{name} of layout {layout} must be {length} bytes")
        padding = bytes(shape.stored_length(name, length) - length)
        keys.append(EncryptedKey(name, encrypt(key), family.kcv(key), padding))
    return WorkingKeys(shape, tuple(keys))
