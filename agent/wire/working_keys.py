"""Field 62 of a successful 0810: working keys encrypted under the TMK, each with its KCV.

The agent never decrypts them; it passes field 62 to the card module and keeps only the KCVs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.wire.errors import WireError

KCV_BYTES = 4
# scheme (60.3 of the sign-in) -> (key length, carries a TDK)
SCHEMES: dict[str, tuple[int, bool]] = {"001": (8, False), "003": (16, False), "004": (16, True)}


def key_names(scheme: str) -> tuple[str, ...]:
    return ("PIK", "MAK", "TDK") if _scheme(scheme)[1] else ("PIK", "MAK")


def field62_length(scheme: str) -> int:
    return (_scheme(scheme)[0] + KCV_BYTES) * len(key_names(scheme))


def _scheme(scheme: str) -> tuple[int, bool]:
    try:
        return SCHEMES[scheme]
    except KeyError:
        raise WireError(
            f"unknown key scheme {scheme!r}; expected one of {', '.join(SCHEMES)}"
        ) from None


@dataclass(frozen=True)
class EncryptedKey:
    name: str  # "PIK", "MAK" or "TDK"
    ciphertext: bytes = field(repr=False)
    kcv: bytes


@dataclass(frozen=True)
class WorkingKeys:
    scheme: str
    pik: EncryptedKey
    mak: EncryptedKey
    tdk: EncryptedKey | None = None

    @property
    def keys(self) -> tuple[EncryptedKey, ...]:
        return (self.pik, self.mak) + ((self.tdk,) if self.tdk else ())

    def kcvs(self) -> dict[str, str]:
        """KCVs by key name, as upper-case hex: what the journal keeps of a sign-in."""
        return {key.name: key.kcv.hex().upper() for key in self.keys}

    def to_field62(self) -> bytes:
        return b"".join(key.ciphertext + key.kcv for key in self.keys)


def parse_field62(data: bytes, scheme: str) -> WorkingKeys:
    """Split field 62 into PIK, MAK (and TDK for 004); raises :class:`WireError` on a bad length."""
    key_length, _ = _scheme(scheme)
    expected = field62_length(scheme)
    if len(data) != expected:
        raise WireError(
            f"field 62 (working keys) is {len(data)} bytes; scheme {scheme} needs {expected}"
        )
    step = key_length + KCV_BYTES
    keys = [
        EncryptedKey(
            name,
            data[i * step : i * step + key_length],
            data[(i + 1) * step - KCV_BYTES : (i + 1) * step],
        )
        for i, name in enumerate(key_names(scheme))
    ]
    return WorkingKeys(scheme, *keys)


def issue_working_keys(tmk: bytes, scheme: str, clear: dict[str, bytes]) -> WorkingKeys:
    """Encrypt clear working keys under ``tmk`` (ECB) with their KCVs: what a host puts in 62.

    ``clear`` maps PIK, MAK (and TDK for 004) to keys of the scheme's length.
    """
    from agent.wire.mac import DesKey, kcv

    key_length, _ = _scheme(scheme)
    encrypt = DesKey(tmk).encrypt
    keys = []
    for name in key_names(scheme):
        key = clear[name]
        if len(key) != key_length:
            raise WireError(f"{name} for scheme {scheme} must be {key_length} bytes")
        ciphertext = b"".join(encrypt(key[i : i + 8]) for i in range(0, key_length, 8))
        keys.append(EncryptedKey(name, ciphertext, kcv(key)))
    return WorkingKeys(scheme, *keys)
