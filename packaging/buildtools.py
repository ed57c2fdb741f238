"""What the package builds share: the project's files, running a tool, reproducible time, and the
version every artefact reports (agent/version.py reads what :func:`write_version` writes).

    python3 packaging/buildtools.py version [--source DIR]      the version a build of DIR says
    python3 packaging/buildtools.py stamp [--source DIR] TREE   write TREE/agent/_build.py
    python3 packaging/buildtools.py pin-yocto                   the Yocto recipe: PV and SRCREV of
                                                                the release, once committed
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("agent", "drivers", "firmware_hooks", "pyproject.toml", "README.md", "LICENSE")
# What the artefacts are built from or install: a change here not yet committed makes a build
# ".dirty" (docs/: the Debian packages install the project's documentation)
SHIPPED = (*SOURCES, "packaging", "docs")
RELEASE_FILE = "agent/__init__.py"
BUILD_FILE = "agent/_build.py"  # git-ignored: never in the repository, always in a package
RELEASE_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)


class BuildError(Exception):
    pass


def run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(
            f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


def copy_sources(destination: Path, version: Version) -> None:
    """The working tree's project files, without bytecode or build leftovers, with
    agent/_build.py saying ``version`` (:func:`describe` of this checkout)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    destination.mkdir(parents=True)
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore)
        else:
            shutil.copy2(source, destination / name)
    write_version(destination, version)


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH, else the time of the last commit: the same tree builds the same
    timestamps."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    result = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    )
    stamp = result.stdout.strip()
    return int(stamp) if result.returncode == 0 and stamp else int(time.time())


# ------------------------------------------------------------------------------------ version


@dataclass(frozen=True)
class Version:
    """What a build of a tree reports: ``full`` is the release alone at the release's own
    commit, else ``<release>+g<12 hex digits of commit>``, ``.dirty`` appended when the tree
    differs from that commit, or ``<release>+unknown`` when git could not tell. ``note`` says
    why git could not, for the build's log."""

    release: str
    commit: str
    full: str
    note: str = ""


def release_of(tree: Path) -> str:
    """agent.__version__ of ``tree``, read as text (the tree is not imported)."""
    match = RELEASE_LINE.search((tree / RELEASE_FILE).read_text(encoding="utf-8"))
    if match is None:
        raise BuildError(f"{tree / RELEASE_FILE}: no __version__ line")
    return match.group(1)


def git(source: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    """git in ``source``, read-only (no optional locks), without the caller's GIT_* variables
    (a hook's GIT_DIR would name another repository); None where git cannot run."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env["GIT_OPTIONAL_LOCKS"] = "0"
    try:
        return subprocess.run(
            ["git", "-C", str(source), *args],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None


def release_commit(source: Path) -> str:
    """The commit that set HEAD's ``__version__`` line (the last one in HEAD's history that
    changed it), or "" if there is none."""
    log = git(
        source, "log", "-1", "--format=%H", "--no-color", "--no-show-signature",
        "-G", "^__version__ = ", "HEAD", "--", RELEASE_FILE,
    )  # fmt: skip
    return log.stdout.strip() if log is not None and log.returncode == 0 else ""


def describe(source: Path = ROOT) -> Version:
    """The version of a build of ``source``, from git when ``source`` is the top of a git
    checkout; else what its agent/_build.py says (a source tree stamped when it was made), else
    ``<release>+unknown``."""
    release = release_of(source)
    top = git(source, "rev-parse", "--show-toplevel")
    head = git(source, "rev-parse", "--verify", "HEAD^{commit}")
    if top is None or head is None:
        note = "git is not installed"
    elif top.returncode != 0:
        note = f"not a git checkout ({top.stderr.strip()})"
    elif Path(top.stdout.strip()).resolve() != source.resolve():
        note = f"not the top of a git checkout (that is {top.stdout.strip()})"
    elif head.returncode != 0:
        note = head.stderr.strip() or "no commit"
    else:
        commit = head.stdout.strip()
        status = git(source, "status", "--porcelain", "--untracked-files=normal", "--", *SHIPPED)
        if status is None or status.returncode != 0:
            return Version(release, commit, f"{release}+g{commit[:12]}.dirty",
                           "git status failed: taken as changed")  # fmt: skip
        dirty = bool(status.stdout.strip())
        # in a shallow clone the oldest commit present has no parent either: whether it set
        # the version cannot be told, so it is not taken for the release
        parents = git(source, "rev-list", "--max-count=1", "--parents", commit)
        shallow = git(source, "rev-parse", "--is-shallow-repository")
        boundary = (
            shallow is not None
            and shallow.stdout.strip() == "true"
            and parents is not None
            and len(parents.stdout.split()) == 1
        )
        if not dirty and not boundary and release_commit(source) == commit:
            return Version(release, commit, release)
        return Version(release, commit, f"{release}+g{commit[:12]}{'.dirty' if dirty else ''}")
    built = read_version(source)
    if built is not None and built.release == release:
        return Version(release, built.commit, built.full, f"{note}: {BUILD_FILE} kept")
    return Version(release, "", f"{release}+unknown", note)


def read_version(tree: Path) -> Version | None:
    """What ``tree``/agent/_build.py says, read as text, or None where there is none."""
    path = tree / BUILD_FILE
    if not path.is_file():
        return None
    values = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = str(node.value.value)
    full = values.get("VERSION", "")
    return Version(full.split("+", 1)[0], values.get("COMMIT", ""), full) if full else None


def write_version(tree: Path, version: Version) -> Path:
    """``tree``/agent/_build.py, which agent/version.py reads (the same bytes for the same
    version: builds stay reproducible)."""
    path = tree / BUILD_FILE
    path.write_text(
        '"""Written by packaging/buildtools.py when this agent was built; never in git."""\n\n'
        f"VERSION = {version.full!r}\n"
        f"COMMIT = {version.commit!r}\n",
        encoding="utf-8",
    )
    return path


def stamp(tree: Path, source: Path | None = None) -> Version:
    """Write ``tree``/agent/_build.py for a build of ``source`` (default: ``tree``, a git
    checkout itself, as the Yocto recipe's); the version written."""
    version = describe(source or tree)
    if version.release != release_of(tree):
        raise BuildError(
            f"{tree} is release {release_of(tree)}, its source {source} {version.release}"
        )
    write_version(tree, version)
    return version


# ------------------------------------------------------------------------------------ Yocto


def pin_yocto(source: Path = ROOT) -> Path:
    """The Yocto recipe named for the release (pos-agent_<release>.bb) with SRCREV its commit.
    A commit cannot name itself: run this once the version bump is committed, and commit what
    it changed."""
    release = release_of(source)
    commit = release_commit(source)
    if not commit:
        raise BuildError("no commit in HEAD's history sets __version__: is this a git checkout?")
    shown = git(source, "show", f"{commit}:{RELEASE_FILE}")
    committed = RELEASE_LINE.search(shown.stdout if shown is not None else "")
    if committed is None or committed.group(1) != release:
        raise BuildError(f"{RELEASE_FILE} says {release}, not yet committed: commit it first")
    yocto = source / "packaging" / "yocto"
    recipes = sorted(yocto.glob("pos-agent_*.bb"))
    if len(recipes) != 1:
        raise BuildError(f"{yocto}: expected one pos-agent_<version>.bb, found {len(recipes)}")
    recipe = recipes[0]
    text = recipe.read_text(encoding="utf-8")
    pinned, count = re.subn(r'^SRCREV = "[0-9a-f]*"$', f'SRCREV = "{commit}"', text, flags=re.M)
    if count != 1:
        raise BuildError(f"{recipe}: expected one SRCREV line, found {count}")
    target = yocto / f"pos-agent_{release}.bb"
    target.write_text(pinned, encoding="utf-8")
    if target != recipe:
        recipe.unlink()
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("version", help="print the version a build of the source says")
    show.add_argument("--source", type=Path, default=ROOT, help="a git checkout (default: this)")
    write = commands.add_parser("stamp", help="write TREE/agent/_build.py")
    write.add_argument("tree", type=Path, help="the tree that is built")
    write.add_argument(
        "--source", type=Path, help="the git checkout TREE was copied from (default: TREE)"
    )
    commands.add_parser("pin-yocto", help="rename the Yocto recipe and set SRCREV to the release")
    args = parser.parse_args(argv)
    try:
        if args.command == "version":
            version = describe(args.source.resolve())
        elif args.command == "stamp":
            source = args.source.resolve() if args.source else None
            version = stamp(args.tree.resolve(), source)
        else:
            print(pin_yocto().relative_to(ROOT))
            return 0
    except BuildError as exc:
        print(f"buildtools.py: {exc}", file=sys.stderr)
        return 1
    if version.note:
        print(f"buildtools.py: {version.note}: the version is {version.full}", file=sys.stderr)
    print(version.full)
    return 0


if __name__ == "__main__":
    sys.exit(main())
