"""Whether the system's own time synchronisation says the clock is right (DESIGN.md section 6:
"vs NTP or the system's time-sync state where available"). A terminal that runs
systemd-timesyncd or chrony knows better than one NTP query: the clock check asks them first,
then the kernel (which any NTP daemon keeps informed), and queries NTP itself only when none of
them can tell."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

# systemd-timesyncd keeps this folder while it runs and the file in it once the clock is synced
TIMESYNCD = Path("/run/systemd/timesync")
TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised


@dataclass(frozen=True)
class SyncState:
    synchronised: bool
    source: str  # timesyncd, chrony or kernel
    error_seconds: float | None = None  # the source's own estimate of how far off it may be


def _timesyncd(folder: Path) -> SyncState | None:
    if not folder.is_dir():
        return None
    return SyncState((folder / "synchronized").exists(), "timesyncd")


def _chrony(program: str) -> SyncState | None:
    """``chronyc -c tracking``: CSV whose 5th field is the system time's offset from true time
    (seconds) and whose last is the leap status, "Not synchronised" before the first sync."""
    try:
        result = subprocess.run(
            [program, "-c", "-n", "tracking"], capture_output=True, text=True, timeout=2,
            check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):  # no chronyc on this system, or it hung
        return None
    fields = result.stdout.strip().split(",")
    if result.returncode != 0 or len(fields) < 14:
        return None  # chronyd not running, or not for us to ask
    try:
        offset = abs(float(fields[4]))
    except ValueError:
        offset = None
    return SyncState(fields[-1] != "Not synchronised", "chrony", offset)


def _kernel() -> SyncState | None:
    """adjtimex(2) with no change requested: whether a daemon keeps the clock synchronised,
    and its maximum error. Refused inside the service's sandbox (ProtectClock=)."""
    import ctypes  # only here: the service's sandbox refuses the call anyway

    class Timex(ctypes.Structure):
        # struct timex's leading fields; the kernel writes about 200 bytes, hence the room
        _fields_ = [
            ("modes", ctypes.c_uint),
            ("offset", ctypes.c_long),
            ("freq", ctypes.c_long),
            ("maxerror", ctypes.c_long),
            ("esterror", ctypes.c_long),
            ("status", ctypes.c_int),
            ("rest", ctypes.c_char * 256),
        ]

    try:
        timex = Timex()
        state = ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return SyncState(state != TIME_ERROR, "kernel", timex.maxerror / 1e6)


def system_sync_state(chronyc: str = "chronyc") -> SyncState | None:
    """What the system's time synchronisation says, or None when nothing can tell."""
    return _timesyncd(TIMESYNCD) or _chrony(chronyc) or _kernel()
