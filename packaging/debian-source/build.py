#!/usr/bin/env python3
"""Build the Debian source packages of pos-agent and of its one dependency Debian lacks, for
sbuild, Isar or ELBE to rebuild (and, with ``--binary``, their .debs here).

    python3 packaging/debian-source/build.py [--out DIR] [--package NAME]... [--orig FILE]
                                             [--binary] [--keep DIR]

What it makes, in ``--out`` (default dist/):

    pos-agent_<version>.dsc, .tar.xz          "3.0 (native)": the project is its own upstream.
                                              The tree holds the project's files (agent, drivers,
                                              firmware_hooks, pyproject.toml, README.md, LICENSE),
                                              packaging/systemd, packaging/config, and
                                              packaging/debian/build.py with buildtools.py (the
                                              manual page is made by the venv package's code),
                                              plus pos-agent/debian/ from here with a changelog
                                              for the version the agent reports (agent/_build.py,
                                              written here: the release at its own commit, else
                                              <release>+g<commit>[.dirty]).
    python-iso8583_<v>-<r>.dsc, .orig.tar.gz, .debian.tar.xz
                                              "3.0 (quilt)": pyiso8583's PyPI source (its sha256
                                              pinned below) and python-iso8583/debian/ from here.
                                              The binary package is python3-iso8583.

Both build with pybuild (dh-python) against Debian's own python3 modules; pos-agent's Depends
come from dh_python3 (debian/py3dist-overrides maps pyproject.toml's dependencies). With
``--binary`` each .dsc is unpacked with dpkg-source -x and built with dpkg-buildpackage -b -us
-uc, which is what sbuild runs inside its chroot; here the Build-Depends must be installed
(dpkg-buildpackage names any that are not) and the build sees only /usr/bin and /bin on PATH, as
a chroot would (no virtual environment's or pyenv's python3).

The orig tarball: ``--orig FILE``, else one already in ``--out`` with the pinned hash, else pip
downloads it (pip's usual configuration: PIP_INDEX_URL, or PIP_NO_INDEX=1 with PIP_FIND_LINKS=DIR
holding the sdist). Timestamps are SOURCE_DATE_EPOCH's, else the last commit's: two builds of one
tree give the same source packages. DEBFULLNAME and DEBEMAIL set the maintainer, as for the venv
package.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGING = HERE.parent
sys.path.insert(0, str(PACKAGING))

from buildtools import ROOT, BuildError, copy_sources, describe, run, source_date_epoch  # noqa: E402

# The venv package's builder: its version reading, maintainer and changelog, one of each.
_spec = importlib.util.spec_from_file_location("venv_deb", PACKAGING / "debian" / "build.py")
venv_deb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(venv_deb)

PLACEHOLDER_MAINTAINER = "pos-agent developers <pos-agent@users.noreply.github.com>"
PACKAGES = ("python-iso8583", "pos-agent")  # in build order: pos-agent depends on the first
# Besides buildtools.SOURCES: the unit, sysusers.d and tmpfiles.d files, the configuration, the
# over-the-air health gate, and the manual page's code (packaging/debian/build.py, which imports
# buildtools.py).
EXTRA_SOURCES = (
    "packaging/systemd",
    "packaging/config",
    "packaging/ota",
    "packaging/buildtools.py",
    "packaging/debian/build.py",
)
ISO8583_SDIST_SHA256 = {
    "4.0.1": "0ed8c56920ba79e23e78978e54b0320403445a72ac9fc97aa877cf0afe6fd824",
}
# What a build chroot has on PATH: Debian's python3, not a virtual environment's or pyenv's.
BUILD_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def need(tool: str, package: str) -> str:
    path = shutil.which(tool, path=BUILD_PATH)
    if path is None:
        raise BuildError(f"{tool} not found: apt-get install {package}")
    return path


def build_env(epoch: int | None = None) -> dict[str, str]:
    """This environment without what would put another Python in the build's way."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "PIP_", "PYTEST_")) and key != "VIRTUAL_ENV"
    }
    env["PATH"] = BUILD_PATH
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(epoch)
    return env


def changelog_version(debian: Path) -> str:
    first = (debian / "changelog").read_text(encoding="utf-8").splitlines()[0]
    match = re.match(r"\S+ \(([^)]+)\)", first)
    if match is None:
        raise BuildError(f"{debian / 'changelog'}: no version in its first line")
    return match.group(1)


def normalise(tree: Path, epoch: int) -> None:
    """Folders 0755, files 0755 when executable else 0644, every timestamp the epoch's: the
    tarballs do not depend on this checkout's umask or file times."""
    for path in [tree, *tree.rglob("*")]:
        if not path.is_symlink():
            executable = path.is_dir() or path.stat().st_mode & 0o100
            path.chmod(0o755 if executable else 0o644)
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def set_maintainer(debian: Path) -> None:
    maintainer = venv_deb.MAINTAINER
    if maintainer == PLACEHOLDER_MAINTAINER:
        return
    for name in ("control", "changelog"):
        path = debian / name
        path.write_text(
            path.read_text(encoding="utf-8").replace(PLACEHOLDER_MAINTAINER, maintainer),
            encoding="utf-8",
        )


def copy_debian(source: Path, tree: Path) -> Path:
    debian = tree / "debian"
    shutil.copytree(source, debian, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return debian


def dpkg_source_build(work: Path, tree: Path, epoch: int, out: Path) -> Path:
    need("dpkg-source", "dpkg-dev")
    output = run("dpkg-source", "--build", tree.name, cwd=work, env=build_env(epoch))
    dsc = next((work / line.split()[-1] for line in output.splitlines() if ".dsc" in line), None)
    if dsc is None or not dsc.exists():
        raise BuildError(f"dpkg-source made no .dsc:\n{output}")
    out.mkdir(parents=True, exist_ok=True)
    for name in dsc_files(dsc):
        if not (out / name).exists() or (out / name).read_bytes() != (work / name).read_bytes():
            shutil.copyfile(work / name, out / name)
    shutil.copyfile(dsc, out / dsc.name)
    return out / dsc.name


def dsc_files(dsc: Path) -> list[str]:
    """The files a .dsc lists (its Files: field)."""
    names, listing = [], False
    for line in dsc.read_text(encoding="utf-8").splitlines():
        if re.match(r"\S", line):
            listing = line.startswith("Files:")
        elif listing and line.strip():
            names.append(line.split()[-1])
    return names


# ------------------------------------------------------------------------------------ pos-agent


def build_pos_agent(work: Path, out: Path) -> Path:
    described = describe(ROOT)
    if described.note:
        print(f"build.py: {described.note}: the version is {described.full}", file=sys.stderr)
    version = described.full
    epoch = source_date_epoch()
    tree = work / f"pos-agent-{version}"
    copy_sources(tree, described)  # with agent/_build.py: the build chroot has no git
    for relative in EXTRA_SOURCES:
        source, target = ROOT / relative, tree / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    debian = copy_debian(HERE / "pos-agent" / "debian", tree)
    (debian / "changelog").write_bytes(venv_deb.changelog(version, epoch))
    set_maintainer(debian)
    normalise(tree, epoch)
    return dpkg_source_build(work, tree, epoch, out)


# ------------------------------------------------------------------------------------ pyiso8583


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def iso8583_orig(version: str, out: Path, given: Path | None, work: Path) -> Path:
    """python-iso8583_<version>.orig.tar.gz in ``work``: pyiso8583's PyPI sdist, checked."""
    expected = ISO8583_SDIST_SHA256.get(version)
    if expected is None:
        raise BuildError(f"no sha256 of pyiso8583 {version}: add it to ISO8583_SDIST_SHA256")
    target = work / f"python-iso8583_{version}.orig.tar.gz"
    cached = out / target.name
    if given is not None:
        source = given
    elif cached.exists() and sha256(cached) == expected:
        source = cached
    else:
        download = work / "download"
        run(
            sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
            "--no-deps", "--no-binary", ":all:", "--dest", download, f"pyiso8583=={version}",
        )  # fmt: skip
        source = download / f"pyiso8583-{version}.tar.gz"
        if not source.exists():
            raise BuildError(f"pip download gave {sorted(p.name for p in download.iterdir())}")
    if sha256(source) != expected:
        raise BuildError(
            f"{source}: sha256 {sha256(source)}, expected {expected} (pyiso8583 {version})"
        )
    shutil.copyfile(source, target)
    return target


def build_iso8583(work: Path, out: Path, given: Path | None) -> Path:
    debian_source = HERE / "python-iso8583" / "debian"
    full_version = changelog_version(debian_source)
    version = full_version.rsplit("-", 1)[0]
    orig = iso8583_orig(version, out, given, work)
    unpacked = work / "unpacked"
    unpacked.mkdir()
    run("tar", "--extract", "--gzip", "--no-same-owner", "--file", orig, "--directory", unpacked)
    (top,) = unpacked.iterdir()  # pyiso8583-<version>/
    tree = work / f"python-iso8583-{version}"
    top.rename(tree)
    debian = copy_debian(debian_source, tree)
    set_maintainer(debian)
    epoch = int(run("dpkg-parsechangelog", "--file", debian / "changelog", "-STimestamp"))
    normalise(debian, epoch)
    return dpkg_source_build(work, tree, epoch, out)


# ------------------------------------------------------------------------------------ binaries


def build_binary(dsc: Path, work: Path, out: Path) -> list[Path]:
    """What sbuild runs in its chroot: unpack the source package, build its binary packages."""
    need("dpkg-buildpackage", "dpkg-dev")
    need("dh", "debhelper")
    folder = work / dsc.stem
    folder.mkdir()
    tree = folder / "tree"
    run("dpkg-source", "--extract", dsc, tree, env=build_env())
    run("dpkg-buildpackage", "--build=binary", "--unsigned-source", "--unsigned-changes",
        cwd=tree, env=build_env())  # fmt: skip
    made = []
    for path in sorted(folder.iterdir()):
        if path.suffix in (".deb", ".changes", ".buildinfo"):
            shutil.copyfile(path, out / path.name)
            made.append(out / path.name)
    return made


def build(
    out: Path, packages: list[str], orig: Path | None, binary: bool, work: Path
) -> list[Path]:
    dscs = []
    for name in (name for name in PACKAGES if name in packages):
        folder = work / name
        folder.mkdir()
        if name == "pos-agent":
            dscs.append(build_pos_agent(folder, out))
        else:
            dscs.append(build_iso8583(folder, out, orig))
    made = list(dscs)
    if binary:
        binaries = work / "binary"
        binaries.mkdir()
        for dsc in dscs:
            made += build_binary(dsc, binaries, out)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the packages go")
    parser.add_argument(
        "--package", action="append", choices=PACKAGES, help="only this source package (repeatable)"
    )
    parser.add_argument("--orig", type=Path, help="pyiso8583's sdist (else in --out, else pip)")
    parser.add_argument(
        "--binary", action="store_true", help="also build the .debs from each .dsc, as sbuild does"
    )
    parser.add_argument("--keep", type=Path, help="build in this (new) folder and keep it")
    args = parser.parse_args(argv)
    packages = args.package or list(PACKAGES)
    orig = args.orig.resolve() if args.orig else None
    try:
        if args.keep:
            args.keep.mkdir(parents=True)
            made = build(args.out.resolve(), packages, orig, args.binary, args.keep.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="pos-agent-dsc-") as work:
                made = build(args.out.resolve(), packages, orig, args.binary, Path(work))
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    print(*made, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
