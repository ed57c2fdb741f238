"""The Debian source packages of packaging/debian-source: pos-agent ("3.0 (native)") and
python-iso8583 ("3.0 (quilt)": pyiso8583 is not in Debian), both built with pybuild.

What sbuild, Isar and ELBE do with a .dsc, done here without their chroot: dpkg-source -x, then
dpkg-buildpackage -b -us -uc in the unpacked tree, with only Debian's /usr/bin and /bin on PATH (a
chroot has no virtual environment and no pyenv), after dpkg-checkbuilddeps has found every
Build-Depends installed. Then lintian, and both .debs installed into a throw-away root the way
tests/packaging/test_deb.py installs the venv package (dpkg --root --force-script-chrootless:
the maintainer scripts run on this machine with DPKG_ROOT), where the agent runs with Debian's
python3 and the root's dist-packages.

One thing a chrootless root needs that a chroot does not: bookworm's py3compile and py3clean
(python3-minimal), which dh_python3's snippets call, ignore DPKG_ROOT: they list the root's files
but would compile this machine's. The root's install uses stand-ins for them (STAND_IN below) that
do the same under DPKG_ROOT.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.packaging.common import PACKAGING, ROOT, UNIT, build_version, require, run
from tests.packaging.debian import (
    WANTS,
    account,
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

SOURCE = PACKAGING / "debian-source"
ISO8583_DEBIAN = SOURCE / "python-iso8583" / "debian"
# What a build chroot has on PATH; the venv's or pyenv's python3 would build for itself.
BUILD_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
DIST_PACKAGES = "usr/lib/python3/dist-packages"
# what the packages put on this machine if a script ignored DPKG_ROOT
OURS = (f"{DIST_PACKAGES}/agent", f"{DIST_PACKAGES}/iso8583/__pycache__")
RUNTIME_DEPENDENCIES = (
    "python3-serial",
    "python3-tenacity",
    "python3-platformdirs",
    "python3-ntplib",
    "python3-paho-mqtt",
)
# dpkg-buildpackage's and debhelper's tools; dpkg-checkbuilddeps names any other Build-Depends
BUILD_TOOLS = (
    ("dpkg-source", "dpkg-dev"),
    ("dpkg-buildpackage", "dpkg-dev"),
    ("dpkg-checkbuilddeps", "dpkg-dev"),
    ("dh", "debhelper"),
    ("pybuild", "dh-python"),
)

STAND_IN = '''#!/usr/bin/python3
"""py3compile / py3clean -p PACKAGE [-V VERSIONS]: bytecode of the package's modules, made or
removed, under DPKG_ROOT (bookworm's own scripts would compile this machine's paths)."""
import importlib.util, os, py_compile, subprocess, sys
from pathlib import Path

root = os.environ.get("DPKG_ROOT", "")
package = sys.argv[sys.argv.index("-p") + 1]
listed = subprocess.run(
    ["dpkg-query", f"--root={root or '/'}", "--listfiles", package],
    capture_output=True, text=True, check=True,
).stdout.splitlines()
modules = [p for p in listed if p.endswith(".py") and p.startswith("/usr/lib/python3/")]
for path in modules:
    cached = Path(importlib.util.cache_from_source(root + path))
    if Path(sys.argv[0]).name == "py3compile":
        py_compile.compile(root + path, cfile=str(cached), dfile=path, doraise=True)
    else:
        for stale in cached.parent.glob(Path(path).stem + ".*.pyc"):
            stale.unlink()
        if cached.parent.is_dir() and not any(cached.parent.iterdir()):
            cached.parent.rmdir()
'''


def epoch() -> str:
    """One SOURCE_DATE_EPOCH for every build of this module: a commit made meanwhile (another
    engineer's) must not change the packages between two builds."""
    result = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return result.stdout.strip() or str(int(time.time()))


EPOCH = epoch()


def iso8583_version() -> str:
    first = (ISO8583_DEBIAN / "changelog").read_text(encoding="utf-8").splitlines()[0]
    return re.match(r"python-iso8583 \(([^)]+)\)", first).group(1)


def build_sources(out: Path, *args: str | Path) -> list[Path]:
    require("dpkg-source", "dpkg-dev")
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    result = run(sys.executable, SOURCE / "build.py", "--out", out, *args, env=env)
    return [Path(line) for line in result.stdout.split()]


@pytest.fixture(scope="module")
def version() -> str:
    """The version pos-agent's packages must say: the release at its own commit, else
    <release>+g<commit>[.dirty] (taken just before the build; the .dsc carries it in
    agent/_build.py, a build chroot has no git)."""
    return build_version()


@pytest.fixture(scope="module")
def sources(version: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two .dsc files (and their tarballs next to them), by source package; built after
    ``version`` was taken."""
    made = build_sources(tmp_path_factory.mktemp("sources"))
    assert sorted(path.name for path in made) == sorted(
        [f"pos-agent_{version}.dsc", f"python-iso8583_{iso8583_version()}.dsc"]
    )
    return {path.name.split("_")[0]: path for path in made}


def unmet_build_depends(tree: Path) -> list[str]:
    result = run("dpkg-checkbuilddeps", cwd=tree, check=False)
    match = re.search(r"Unmet build dependencies: (.*)", result.stderr)
    if result.returncode == 0 or match is None:
        return []
    # "a (>= 1) <!nocheck> | b [amd64]": the package names only
    return re.sub(r"\([^)]*\)|<[^>]*>|\[[^\]]*\]|\|", " ", match.group(1)).split()


@pytest.fixture(scope="module")
def built(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each .dsc unpacked with dpkg-source -x and built with dpkg-buildpackage: the .debs and the
    .changes by name (pos-agent, python3-iso8583, <source>.changes), and the unpacked trees."""
    for tool, package in BUILD_TOOLS:
        require(tool, package)
    work = tmp_path_factory.mktemp("binary")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST_"))},
        "PATH": BUILD_PATH,
    }
    result = {}
    for name, dsc in sources.items():
        folder = work / name
        folder.mkdir()
        tree = folder / "tree"
        run("dpkg-source", "--extract", dsc, tree, env=env)
        result[f"{name} tree"] = tree
        unmet = unmet_build_depends(tree)
        if unmet:
            pytest.fail(
                f"{name}'s Build-Depends are not installed: apt-get install {' '.join(unmet)} "
                "(.ci/run should)"
            )
        run("dpkg-buildpackage", "-b", "-us", "-uc", cwd=tree, env=env, timeout=600)
        for path in folder.iterdir():
            if path.suffix == ".deb":
                result[path.name.split("_")[0]] = path
            elif path.suffix == ".changes":
                result[f"{name}.changes"] = path
    return result


def hook_events() -> tuple[str, ...]:
    from firmware_hooks.runner import EVENTS

    return EVENTS


# ------------------------------------------------------------------------------------ sources


def test_source_packages(sources: dict[str, Path]) -> None:
    formats = {}
    for name, dsc in sources.items():
        text = dsc.read_text(encoding="utf-8")
        formats[name] = re.search(r"^Format: (.*)$", text, re.MULTILINE).group(1)
        for needed in (
            "debhelper-compat (= 13)",
            "dh-sequence-python3",
            "pybuild-plugin-pyproject",
        ):
            assert needed in text, f"{dsc.name}: Build-Depends without {needed}"
        assert "Architecture: all" in text
    assert formats == {"pos-agent": "3.0 (native)", "python-iso8583": "3.0 (quilt)"}
    upstream = iso8583_version().rsplit("-", 1)[0]
    assert (sources["python-iso8583"].parent / f"python-iso8583_{upstream}.orig.tar.gz").exists()


def test_packaged_pyiso8583_satisfies_pyproject() -> None:
    """The version packaged is one pyproject.toml allows (">=4.0,<5")."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in dependencies if re.match(r"pyiso8583\b", d)]
    version = tuple(int(part) for part in iso8583_version().split("-")[0].split("."))
    for operator, bound in re.findall(r"(>=|<=|<|>|==)\s*([\d.]+)", spec):
        limit = tuple(int(part) for part in bound.split("."))
        assert {
            ">=": version >= limit, "<": version < limit, "<=": version <= limit,
            ">": version > limit, "==": version == limit,
        }[operator], f"pyiso8583 {version} does not satisfy {spec}"  # fmt: skip


def test_two_builds_of_one_tree_give_the_same_source_packages(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    folder = sources["python-iso8583"].parent
    (orig,) = folder.glob("python-iso8583_*.orig.tar.gz")
    for path in build_sources(tmp_path, "--orig", orig):
        assert path.read_bytes() == (folder / path.name).read_bytes(), path.name


def test_dpkg_source_extracts_the_whole_tree(built: dict[str, Path]) -> None:
    tree = built["pos-agent tree"]
    for relative in (
        "debian/rules",
        "pyproject.toml",
        "agent/__init__.py",
        "packaging/systemd/pos-agent.service",
        "packaging/systemd/pos-agent.sysusers",
        "packaging/config/agent.toml",
    ):
        assert (tree / relative).exists(), relative
    assert (tree / "packaging/systemd/pos-agent.service").read_bytes() == UNIT.read_bytes()
    assert (built["python-iso8583 tree"] / "iso8583/__init__.py").exists()


# ------------------------------------------------------------------------------------ the .debs


def test_pos_agent_fields(built: dict[str, Path], version: str) -> None:
    deb = built["pos-agent"]
    assert deb.name == f"pos-agent_{version}_all.deb"
    assert field(deb, "Architecture") == "all"
    names = set(dependency_names(deb))
    # useradd/userdel of the maintainer scripts, /bin/kill of the unit's ExecReload
    assert {"python3", "python3-iso8583", *RUNTIME_DEPENDENCIES, "passwd", "procps"} <= names
    assert not [name for name in names if "cryptography" in name]  # the extra "sim" only
    depends = field(deb, "Depends")
    assert "python3-iso8583 (>= 4.0)" in depends and "python3-iso8583 (<< 5)" in depends
    assert "python3:any (>= 3.11~)" in depends
    iso8583 = built["python3-iso8583"]
    assert field(iso8583, "Architecture") == "all"
    assert field(iso8583, "Version") == iso8583_version()


def test_pos_agent_contents(built: dict[str, Path]) -> None:
    entries = contents(built["pos-agent"])
    for path in (
        *common_paths(),
        f"{DIST_PACKAGES}/agent/__init__.py",
        f"{DIST_PACKAGES}/drivers/__init__.py",
        f"{DIST_PACKAGES}/firmware_hooks/runner.py",
    ):
        assert path in entries, path
    for example in (ROOT / "firmware_hooks/examples").glob("*/*"):
        relative = example.relative_to(ROOT / "firmware_hooks")
        assert f"usr/share/doc/pos-agent/hooks/{relative}" in entries
    assert all(" root/root " in line for line in entries.values())
    assert not [p for p in entries if p.endswith(".pyc") or "__pycache__" in p]
    assert not [p for p in entries if "cryptography" in p or "/iso8583" in p]
    conffiles = run("dpkg-deb", "--info", built["pos-agent"], "conffiles").stdout.split()
    assert conffiles == ["/etc/pos-agent/agent.toml", "/etc/pos-agent/hooks.d/README"]
    iso8583 = contents(built["python3-iso8583"])
    assert f"{DIST_PACKAGES}/iso8583/__init__.py" in iso8583
    assert not [line for line in iso8583.values() if line.startswith("-rwx")]


def test_lintian_finds_no_errors(sources: dict[str, Path], built: dict[str, Path]) -> None:
    lintian = require("lintian", "lintian")
    changes = [path for name, path in built.items() if name.endswith(".changes")]
    result = run(
        lintian, "--fail-on", "error", "--tag-display-limit", "0", "--display-level", ">=warning",
        *sources.values(), *changes, check=False, timeout=600,
    )  # fmt: skip
    tags = [line for line in result.stdout.splitlines() if re.match(r"[EWX]: ", line)]
    print("lintian:", *tags or ["no errors, no warnings"], sep="\n  ")
    assert not [line for line in tags if line.startswith("E: ")]
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------ installed


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stand-ins")
    for name in ("py3compile", "py3clean"):
        (folder / name).write_text(STAND_IN, encoding="utf-8")
        (folder / name).chmod(0o755)
    return folder


def dpkg_with(root: Path, stand_ins: Path, *args: str | Path, check: bool = True):
    """dpkg with the py3compile/py3clean stand-ins first on the scripts' PATH."""
    return dpkg(root, *args, path=f"{stand_ins}:{BUILD_PATH}", check=check)


def install(root: Path, built: dict[str, Path], stand_ins: Path) -> Path:
    debs = [built["python3-iso8583"], built["pos-agent"]]
    before = host_state(*OURS)
    make_root(root, debs)
    result = dpkg_with(root, stand_ins, "--install", *debs)
    assert unexpected_warnings(result) == []
    assert host_state(*OURS) == before, "a maintainer script changed this machine, not the root"
    return root


@pytest.fixture(scope="module")
def installed(
    built: dict[str, Path], stand_ins: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return install(tmp_path_factory.mktemp("installed") / "root", built, stand_ins)


def agent_env(root: Path, tmp_path: Path) -> dict[str, str]:
    """A terminal's shell, but with the root's dist-packages first: the root's python3 is this
    machine's (a chrootless root cannot have its own), which also finds pyserial, tenacity,
    platformdirs and ntplib in this machine's dist-packages (the Depends listed in the root)."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(root / DIST_PACKAGES),
        "STATE_DIRECTORY": str(tmp_path / "state"),
        "RUNTIME_DIRECTORY": str(tmp_path / "run"),
    }


def test_install_creates_user_unit_link_and_bytecode(installed: Path) -> None:
    user = account(installed, "pos-agent")
    assert user is not None and user.endswith(":/nonexistent:/usr/sbin/nologin")
    assert account(installed, "pos-agent", "group") is not None
    assert os.readlink(installed / WANTS) == f"/{unit_path()}"  # enabled, as in an image build
    assert (installed / unit_path()).read_bytes() == UNIT.read_bytes()
    # dh_python3's postinst compiled both packages' modules (the service cannot: /usr is
    # read-only in its sandbox)
    assert list((installed / DIST_PACKAGES / "agent/__pycache__").glob("*.pyc"))
    assert list((installed / DIST_PACKAGES / "iso8583/__pycache__").glob("*.pyc"))
    hooks = installed / "etc/pos-agent/hooks.d"
    assert sorted(p.name for p in hooks.iterdir() if p.is_dir()) == sorted(hook_events())
    status = (installed / "var/lib/dpkg/status").read_text(encoding="utf-8")
    assert " /etc/pos-agent/agent.toml " in status  # registered as a conffile


def test_the_fleet_watcher_unit_is_installed_but_not_enabled(installed: Path) -> None:
    """An operator's service (agent fleet watch): there to enable, never on by itself."""
    unit = installed / fleet_watch_unit_path()
    assert unit.read_bytes() == UNIT.with_name(unit.name).read_bytes()
    assert fleet_watch_enabled(installed) == []


def test_installed_agent_runs_with_debians_python(
    installed: Path, version: str, tmp_path: Path
) -> None:
    env = agent_env(installed, tmp_path)
    python3, agent = installed / "usr/bin/python3", installed / "usr/bin/agent"
    assert agent.read_text(encoding="utf-8").startswith("#!/usr/bin/python3\n")
    says = run(python3, agent, "--version", env=env, cwd=tmp_path)
    assert says.stdout.strip() == f"pos-agent {version}"  # the package's version, telemetry's
    explain = run(python3, agent, "explain", "97", env=env, cwd=tmp_path)
    assert explain.stdout.startswith("97 ")
    where = run(
        python3, "-c", "import agent, iso8583; print(agent.__file__); print(iso8583.__file__)",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    for module in where.stdout.split():
        assert Path(module).is_relative_to(installed / DIST_PACKAGES), module
    # recovery's retries under the release's own tenacity (bookworm: 8.2.1, which has no
    # wait_exponential_jitter multiplier): three tries, the last one's result
    retried = run(python3, "-c", (
        "import asyncio\n"
        "from agent.recovery.engine import tries\n"
        "count = 0\n"
        "async def once():\n"
        "    global count\n"
        "    count += 1\n"
        "    return count\n"
        "print(asyncio.run(tries(3, 30.0, lambda n: n < 5)(once)))\n"
    ), env=env, cwd=tmp_path)  # fmt: skip
    assert retried.stdout.split() == ["3"], retried.stderr


def test_remove_keeps_configuration_and_purge_leaves_nothing(
    built: dict[str, Path], stand_ins: Path, tmp_path: Path
) -> None:
    before = host_state(*OURS)
    root = install(tmp_path / "root", built, stand_ins)
    result = dpkg_with(root, stand_ins, "--remove", "pos-agent", "python3-iso8583")
    assert unexpected_warnings(result) == []  # py3clean took the bytecode postinst made
    assert not (root / DIST_PACKAGES).exists()
    assert (root / "etc/pos-agent/agent.toml").exists()
    assert account(root, "pos-agent") is not None

    # python3-iso8583 has no conffiles: nothing of it is left to purge
    result = dpkg_with(root, stand_ins, "--purge", "pos-agent")
    assert unexpected_warnings(result) == []
    assert account(root, "pos-agent") is None
    assert account(root, "pos-agent", "group") is None
    assert left_after_purge(root) == []
    assert host_state(*OURS) == before
