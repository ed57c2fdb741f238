"""The Debian package: built by packaging/debian/build.py, clean for lintian, installed into a
throw-away root where its agent runs, then removed and purged without a trace.

How it is installed: `dpkg --root=ROOT --force-script-chrootless`, the way mmdebstrap builds images
without chroot. dpkg unpacks into ROOT, keeps its database there and runs the maintainer scripts
on this machine with DPKG_ROOT=ROOT, which the scripts honour (useradd --prefix,
deb-systemd-helper). That needs neither network nor a second system (a debootstrap tree would need
both) and exercises the real postinst/prerm/postrm. ROOT's dpkg database lists this machine's own
python3, libc6 and libgcc-s1, and ROOT/usr/bin/python3 is a link to this machine's interpreter:
with the scripts running here, that is what the package's dependencies resolve to.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from agent.journal import Journal
from agent.wire.message import Message
from tests.packaging.common import (
    ROOT,
    UNIT,
    build_version,
    hook_events_in_readme,
    require,
    run,
)
from tests.packaging.debian import (
    WANTS,
    account,
    build_deb,
    common_paths,
    contents,
    dependency_names,
    dpkg,
    field,
    fleet_watch_enabled,
    fleet_watch_unit_path,
    host_state,
    left_after_purge,
    make_root,
    unexpected_warnings,
    unit_path,
)

VENV = "usr/lib/pos-agent/venv"


@pytest.fixture(scope="module")
def version() -> str:
    """The version the package must say: the release at its own commit, else
    <release>+g<commit>[.dirty] (taken just before the build)."""
    return build_version()


@pytest.fixture(scope="module")
def deb(version: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built after ``version`` was taken."""
    return build_deb(tmp_path_factory.mktemp("deb"))


def agent_env(tmp_path: Path) -> dict[str, str]:
    """Only what a shell on the terminal would have; the launcher needs PATH for realpath."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "STATE_DIRECTORY": str(tmp_path / "state"),
        "RUNTIME_DIRECTORY": str(tmp_path / "run"),
    }


@pytest.fixture(scope="module")
def installed(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    before = host_state(VENV)
    root = make_root(tmp_path_factory.mktemp("installed") / "root", [deb])
    result = dpkg(root, "--install", deb)
    assert unexpected_warnings(result) == []
    assert host_state(VENV) == before, "a maintainer script changed this machine, not the root"
    return root


# ------------------------------------------------------------------------------------ the file


def test_package_fields(deb: Path, version: str) -> None:
    assert deb.name == f"pos-agent_{version}_all.deb"
    assert field(deb, "Package") == "pos-agent"
    assert field(deb, "Version") == version
    assert field(deb, "Architecture") == "all"  # pure Python: cryptography is only in "sim"
    depends = field(deb, "Depends")
    assert "python3 (>= 3.11~)" in depends
    # useradd/userdel of the maintainer scripts, /bin/kill of the unit's ExecReload
    assert dependency_names(deb) == ["passwd", "procps", "python3"]
    size = deb.stat().st_size
    print(f"{deb.name}: {size / 1e6:.1f} MB, installed {int(field(deb, 'Installed-Size'))} KiB")


def test_package_contents(deb: Path) -> None:
    entries = contents(deb)
    listing = list(entries.values())
    documents = [f"usr/share/doc/pos-agent/docs/{page}.md" for page in
                 ("README", "configuration", "technician", "fleet", "operations", "wire-profile",
                  "module-protocol")]  # fmt: skip
    for path in (*common_paths(), f"{VENV}/pyvenv.cfg", "usr/share/doc/pos-agent/hooks/README.md",
                 *documents):  # fmt: skip
        assert path in entries, path
    for example in (ROOT / "firmware_hooks/examples").glob("*/*"):
        relative = example.relative_to(ROOT / "firmware_hooks")
        assert f"usr/share/doc/pos-agent/hooks/{relative}" in entries
    assert all(" root/root " in line for line in listing)
    assert not [p for p in entries if p.endswith(".pyc") or "__pycache__" in p]
    assert not [p for p in entries if p.endswith(".so") or ".so." in p]  # nothing compiled
    assert not [p for p in entries if "/cryptography" in p]
    # nothing names the machine the package was built on
    assert not [p for p in entries if "/tmp/" in p or "pos-agent-deb-" in p]
    conffiles = run("dpkg-deb", "--info", deb, "conffiles").stdout.split()
    assert conffiles == ["/etc/pos-agent/agent.toml", "/etc/pos-agent/hooks.d/README"]


def test_two_builds_of_one_tree_are_identical(deb: Path, tmp_path: Path) -> None:
    """Reproducible (SOURCE_DATE_EPOCH, no build path in any file, pip's RECORD included)."""
    again = build_deb(tmp_path / "again")
    assert again.read_bytes() == deb.read_bytes()


def test_lintian_finds_no_errors(deb: Path) -> None:
    lintian = require("lintian", "lintian")
    result = run(
        lintian, "--fail-on", "error", "--tag-display-limit", "0", "--display-level", ">=warning",
        deb, check=False,
    )  # fmt: skip
    tags = [line for line in result.stdout.splitlines() if re.match(r"[EWX]: ", line)]
    print("lintian:", *tags or ["no errors, no warnings"], sep="\n  ")
    assert not [line for line in tags if line.startswith("E: ")]
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------ installed


def test_install_creates_user_unit_link_and_bytecode(installed: Path) -> None:
    from firmware_hooks.runner import EVENTS

    user = account(installed, "pos-agent")
    assert user is not None and user.endswith(":/nonexistent:/usr/sbin/nologin")
    assert account(installed, "pos-agent", "group") is not None
    assert os.readlink(installed / WANTS) == f"/{unit_path()}"  # enabled, as in an image build
    assert (installed / unit_path()).read_bytes() == UNIT.read_bytes()
    assert sorted(list((installed / VENV).glob("lib/python3.*/site-packages/agent/__pycache__")))
    hooks = installed / "etc/pos-agent/hooks.d"
    assert sorted(p.name for p in hooks.iterdir() if p.is_dir()) == sorted(EVENTS)
    assert hook_events_in_readme() == list(EVENTS)
    status = (installed / "var/lib/dpkg/status").read_text(encoding="utf-8")
    assert " /etc/pos-agent/agent.toml " in status  # registered as a conffile


def test_the_fleet_watcher_unit_is_installed_but_not_enabled(installed: Path) -> None:
    """An operator's service (agent fleet watch): there to enable, never on by itself."""
    unit = installed / fleet_watch_unit_path()
    assert unit.read_bytes() == UNIT.with_name(unit.name).read_bytes()
    assert fleet_watch_enabled(installed) == []


def test_installed_agent_runs_from_the_root(installed: Path, version: str, tmp_path: Path) -> None:
    env = agent_env(tmp_path)
    says = run(installed / "usr/bin/agent", "--version", env=env, cwd=tmp_path)
    assert says.stdout.strip() == f"pos-agent {version}"  # the package's version, telemetry's
    where = run(
        installed / VENV / "bin/python3", "-I", "-c", "import agent; print(agent.__file__)",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(installed / VENV)
    explain = run(installed / "usr/bin/agent", "explain", "97", env=env, cwd=tmp_path)
    assert explain.stdout.startswith("97 ")
    # the simulators are not a terminal's: the demo names the extra that brings them
    demo = run(installed / "usr/bin/agent", "demo", env=env, cwd=tmp_path, check=False)
    assert demo.returncode == 2
    assert "pip install 'pos-agent[sim]'" in demo.stderr and "Traceback" not in demo.stderr


def test_installed_agent_selftest_json(installed: Path, tmp_path: Path) -> None:
    """A terminal fresh from the package: nothing provisioned, so the provisioning check fails
    and selftest exits 1 (DESIGN.md section 6) with the pinned JSON."""
    result = run(
        installed / "usr/bin/agent", "selftest", "--json",
        "--config", installed / "etc/pos-agent/agent.toml",
        env=agent_env(tmp_path), cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"ok", "duration_ms", "tid", "version", "at", "checks"}
    assert result.returncode == (0 if report["ok"] else 1)
    for check in report["checks"]:
        assert set(check) == {"id", "status", "finding", "summary", "detail", "remedy"}
        assert check["status"] in ("ok", "warn", "fail", "skip")
    statuses = {check["id"]: check["status"] for check in report["checks"]}
    assert statuses.get("provisioning") == "fail"


def test_remove_keeps_configuration_and_purge_leaves_nothing(deb: Path, tmp_path: Path) -> None:
    before = host_state(VENV)
    root = make_root(tmp_path / "root", [deb])
    dpkg(root, "--install", deb)
    state = root / "var/lib/pos-agent"  # what the service leaves: a journal, nothing queued
    Journal(state / "journal.sqlite3").close()

    result = dpkg(root, "--remove", "pos-agent")
    assert unexpected_warnings(result) == []
    assert not (root / "usr/lib/pos-agent").exists()  # bytecode made by postinst went too
    assert not (root / "usr/bin/agent").exists()
    assert (root / "etc/pos-agent/agent.toml").exists()
    assert (state / "journal.sqlite3").exists()
    assert account(root, "pos-agent") is not None

    assert account(root, "pos-agent-tech", "group") is not None

    result = dpkg(root, "--purge", "pos-agent")
    assert unexpected_warnings(result) == []
    assert account(root, "pos-agent") is None
    assert account(root, "pos-agent", "group") is None
    assert account(root, "pos-agent-tech", "group") is None
    assert left_after_purge(root) == []
    assert host_state(VENV) == before


def test_purge_keeps_a_journal_with_queued_reversals(deb: Path, tmp_path: Path) -> None:
    """Money a customer may be owed is not deleted with the package: purge says so instead."""
    root = make_root(tmp_path / "root", [deb])
    dpkg(root, "--install", deb)
    journal = Journal(root / "var/lib/pos-agent/journal.sqlite3")
    sent = journal.begin(
        Message("0200", {3: "000000", 4: "000000001000", 11: "000007"}), financial=True
    )
    journal.finish(sent, "timed-out", reversal_reason="98")
    journal.close()
    dpkg(root, "--remove", "pos-agent")
    result = dpkg(root, "--purge", "pos-agent")
    assert "purge keeps /var/lib/pos-agent" in result.stderr
    assert "holds 1 reversal(s)" in result.stderr
    assert (root / "var/lib/pos-agent/journal.sqlite3").exists()
    assert account(root, "pos-agent") is not None  # the files' owner stays with them
