"""A Debian system booted under real systemd, for the tests that only systemd as PID 1 can answer
(`systemctl reload`, Type=notify, the unit's sandbox, the service's user and groups).

The tree is Debian's own (debootstrap, this machine's release, so that the .deb's python3
dependency is the one it was built for), built once into a cache folder and never changed:
`systemd-nspawn --volatile=overlay` boots it with a tmpfs over its root, so every boot starts from
the same tree and leaves nothing behind. The container has its own /tmp, /run and network
(loopback only); nothing it does reaches this machine's. Commands run in it through nsenter,
in all the namespaces of its PID 1.

No machined or systemd is needed on this machine (`--register=no --keep-unit`); root is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.common import require, run

# What the tree holds besides Debian's minimal base: systemd as init, and what the .deb depends on
# (python3, passwd for its accounts, procps for ExecReload's kill).
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "passwd", "procps")
MIRROR = os.environ.get("POS_AGENT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BOOT_TIMEOUT = 90.0
# Only what the commands need from the environment: nothing of the test's virtual environment.
CONTAINER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("booting a container needs root (.ci/run runs as root)")


def release() -> str:
    """This machine's Debian release (bookworm): the tree's, so the .deb's python3 fits it."""
    for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value:
            return value.strip('"')
    pytest.fail("/etc/os-release names no VERSION_CODENAME: not a Debian machine")


def debian_tree() -> Path:
    """The cached tree, built when missing (about a minute; needs the Debian mirror)."""
    require("debootstrap", "debootstrap")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pos-agent-tests"
    key = hashlib.sha256(f"{release()} {' '.join(PACKAGES)} {MIRROR}".encode()).hexdigest()[:12]
    tree = cache / f"debian-{release()}-{key}"
    if (tree / "usr/lib/systemd/systemd").exists():
        return tree
    building = tree.with_name(tree.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    run(
        "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
        release(), building, MIRROR, timeout=900,
    )  # fmt: skip
    building.rename(tree)
    return tree


class Container:
    """A booted tree: :meth:`sh` runs a command in it."""

    def __init__(self, nspawn: subprocess.Popen[bytes], leader: int, console: Path) -> None:
        self._nspawn = nspawn
        self.leader = leader  # the container's PID 1 (systemd), as this machine numbers it
        self.console = console  # what systemd printed while it booted

    def sh(
        self, script: str, *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``script`` by /bin/sh in the container, as its root."""
        return run(
            "nsenter", f"--target={self.leader}", "--all", "/bin/sh", "-c", script,
            check=check, timeout=timeout, env=CONTAINER_ENV,
        )  # fmt: skip

    @property
    def root(self) -> Path:
        """The container's / as this machine sees it (to put files in)."""
        return Path(f"/proc/{self.leader}/root")

    def wait_booted(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            if self._nspawn.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"the container did not boot: {self.console.read_text(errors='replace')}")

    def stop(self) -> None:
        """Power off (nspawn turns SIGTERM into the container's own shutdown)."""
        if self._nspawn.poll() is None:
            self._nspawn.terminate()
            try:
                self._nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._nspawn.kill()
                self._nspawn.wait()


@contextlib.contextmanager
def booted(tree: Path, console: Path, *, bind_ro: Path | None = None) -> Iterator[Container]:
    """``tree`` booted under its own systemd; ``bind_ro`` is seen read-only at /mnt/host."""
    require_root()
    nspawn_path = require("systemd-nspawn", "systemd-container")
    require("nsenter", "util-linux")
    command = [
        nspawn_path, "--boot", "--register=no", "--keep-unit", "--volatile=overlay",
        "--private-network", "--machine=pos-agent-test", "--console=read-only",
        f"--directory={tree}",
    ]  # fmt: skip
    if bind_ro is not None:
        command.append(f"--bind-ro={bind_ro}:/mnt/host")
    with open(console, "wb") as out:
        nspawn = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    container = None
    try:
        leader = _leader(nspawn, console)
        container = Container(nspawn, leader, console)
        container.wait_booted()
        yield container
    finally:
        if container is not None:
            container.stop()
        elif nspawn.poll() is None:
            nspawn.kill()
            nspawn.wait()


def _leader(nspawn: subprocess.Popen[bytes], console: Path) -> int:
    """The container's PID 1: nspawn's child once it runs systemd."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline and nspawn.poll() is None:
        children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        time.sleep(0.05)
    pytest.fail(f"systemd-nspawn started no systemd: {console.read_text(errors='replace')}")
