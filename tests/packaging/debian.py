"""What the two Debian package tests share: reading a .deb, and a throw-away root to install it
into with `dpkg --root=ROOT --force-script-chrootless` (the way mmdebstrap builds images without
chroot: the maintainer scripts run on this machine with DPKG_ROOT=ROOT, which they honour)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.packaging.common import build_script, require, run

WANTS = "etc/systemd/system/multi-user.target.wants/pos-agent.service"
ACCOUNT_FILES = {"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"}


def field(deb: Path, name: str) -> str:
    return run("dpkg-deb", "--field", deb, name).stdout.strip()


def dependency_names(deb: Path) -> list[str]:
    return sorted(
        {re.split(r"[\s(:]", alt.strip())[0] for alt in re.split(r"[,|]", field(deb, "Depends"))}
    )


def contents(deb: Path) -> dict[str, str]:
    """{path: its line of dpkg-deb --contents}."""
    listing = run("dpkg-deb", "--contents", deb).stdout.splitlines()
    return {line.split()[5].removeprefix("./").rstrip("/"): line for line in listing}


def unit_path() -> str:
    """Where this distribution's systemd wants units (/lib/systemd/system on Debian 12)."""
    require("pkg-config", "pkg-config")
    folder = run("pkg-config", "--variable=systemdsystemunitdir", "systemd").stdout.strip()
    return f"{folder.lstrip('/')}/pos-agent.service"


def fleet_watch_unit_path() -> str:
    """The incident watcher's unit (an operator's service), beside the agent's."""
    return str(Path(unit_path()).with_name("pos-agent-fleet-watch.service"))


def fleet_watch_enabled(root: Path) -> list[Path]:
    """Links that would start the incident watcher in ``root``: none after an install."""
    return list((root / "etc/systemd/system").rglob("pos-agent-fleet-watch.service"))


def common_paths() -> list[str]:
    """What both Debian packages install: the command, the unit with its sysusers.d/tmpfiles.d
    pair, the fleet's incident watcher's unit, the configuration with a folder per hook event,
    the manual, the OTA gate, the docs."""
    from firmware_hooks.runner import EVENTS

    return [
        "usr/bin/agent",
        unit_path(),
        f"{unit_path()}.d/textfile.conf",
        fleet_watch_unit_path(),
        "usr/lib/sysusers.d/pos-agent.conf",
        "usr/lib/tmpfiles.d/pos-agent.conf",
        "etc/pos-agent/agent.toml",
        "etc/pos-agent/hooks.d/README",
        *(f"etc/pos-agent/hooks.d/{event}" for event in EVENTS),
        "usr/share/man/man1/agent.1.gz",
        "usr/share/doc/pos-agent/copyright",
        "usr/lib/pos-agent/ota/health-gate",
        "usr/share/doc/pos-agent/ota/mender/ArtifactCommit_Enter_50_pos-agent",
        "usr/share/doc/pos-agent/ota/rauc/mark-good",
    ]


def make_root(root: Path, debs: list[Path]) -> Path:
    """A dpkg database listing this machine's packages the .debs depend on (the scripts run
    here, so that is what the dependencies resolve to), and the root's python3: Debian's."""
    admin = root / "var/lib/dpkg"
    for folder in ("info", "updates", "triggers"):
        (admin / folder).mkdir(parents=True)
    (admin / "available").touch()
    ours = {field(deb, "Package") for deb in debs}
    stanzas = []
    for name in sorted({name for deb in debs for name in dependency_names(deb)} - ours):
        status = run("dpkg-query", "--status", name, check=False)
        if status.returncode != 0:
            pytest.fail(f"{name} is not installed: apt-get install {name} (.ci/run does)")
        stanzas.append(status.stdout.strip() + "\n\n")
        package = run("dpkg-query", "--show", "--showformat=${binary:Package}", name).stdout
        (admin / "info" / f"{package.strip()}.list").touch()
    (admin / "status").write_text("".join(stanzas), encoding="utf-8")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/python3").symlink_to("/usr/bin/python3")
    return root


def dpkg(root: Path, *args: str | Path, path: str | None = None, check: bool = True):
    """dpkg on ``root``; ``path``: the scripts' PATH (default this one, with the sbin folders)."""
    require("deb-systemd-helper", "init-system-helpers")
    require("useradd", "passwd")
    search = path or os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return run(
        "dpkg", f"--root={root}", "--force-script-chrootless", "--force-not-root",
        "--log=/dev/null", *args, env={**os.environ, "PATH": search}, check=check,
    )  # fmt: skip


def account(root: Path | None, name: str, kind: str = "passwd") -> str | None:
    path = (root or Path("/")) / "etc" / kind
    if not path.exists():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    return next((line for line in lines if line.startswith(f"{name}:")), None)


def unexpected_warnings(result) -> list[str]:
    """dpkg's warnings, but for the folders the test made itself (/usr/bin for the python3 link,
    /etc for the account files): those stay when the packages go."""
    return [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "warning" in line
        and not re.search(r"directory '/(usr/bin|etc)' not empty so not removed$", line)
    ]


def left_after_purge(root: Path) -> list[str]:
    """Files in ``root`` that are neither dpkg's database, nor what the test made (the python3
    link), nor the account files and their backups: a purge must leave none."""
    expected = {"usr/bin/python3"} | ACCOUNT_FILES | {f"{name}-" for name in ACCOUNT_FILES}
    return sorted(
        relative
        for path in root.rglob("*")
        if not path.is_dir() or path.is_symlink()
        for relative in [str(path.relative_to(root))]
        if not relative.startswith("var/lib/dpkg/") and relative not in expected
    )


def host_state(*installed: str) -> tuple:
    """What a script ignoring DPKG_ROOT would change on this machine: the account, the unit's
    enabling link, the state directory, and the ``installed`` paths of the package itself."""
    return (
        account(None, "pos-agent"),
        account(None, "pos-agent", "group"),
        os.path.lexists(f"/{WANTS}"),
        os.path.lexists("/var/lib/pos-agent"),
        *(os.path.lexists(f"/{path}") for path in installed),
    )


def build_deb(out: Path) -> Path:
    for tool, package in (
        ("dpkg-deb", "dpkg"),
        ("pkg-config", "pkg-config"),
        ("/usr/bin/python3", "python3 python3-venv"),
    ):
        require(tool, package)
    return build_script("debian/build.py", "--out", out)
