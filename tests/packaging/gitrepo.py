"""A git repository of its own for the version tests: the files that make and read the version
(agent/__init__.py, agent/version.py, packaging/buildtools.py, the Yocto recipe, the Buildroot
package, .gitignore) copied from this tree, committed with the releases a test asks for. The
tests then build "commits" of it the way each artefact's build does, whatever state this
repository's own history and working tree are in."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.packaging.common import PACKAGING, ROOT

FILES = (
    ".gitignore",
    "LICENSE",
    "agent/__init__.py",
    "agent/version.py",
    "packaging/buildtools.py",
    *(str(p.relative_to(ROOT)) for p in (PACKAGING / "yocto").glob("pos-agent_*.bb")),
    "packaging/buildroot/pos-agent/pos-agent.mk",
)
# git without this machine's or this user's configuration, with an identity for the commits
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(where: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV
    result = subprocess.run(
        ["git", "-C", str(where), "-c", "init.defaultBranch=main", *args],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def set_release(tree: Path, release: str) -> None:
    init = tree / "agent/__init__.py"
    text = re.sub(
        r'^__version__ = "[^"]+"$', f'__version__ = "{release}"',
        init.read_text(encoding="utf-8"), flags=re.M,
    )  # fmt: skip
    init.write_text(text, encoding="utf-8")


def make_repo(path: Path) -> Path:
    """A repository at ``path`` holding FILES, nothing committed yet."""
    path.mkdir(parents=True)
    for relative in FILES:
        (path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / relative, path / relative)
    git(path, "init", "-q")
    return path


def commit(repo: Path, message: str, release: str | None = None, touch: str = "") -> str:
    """Commit everything (after setting agent.__version__ to ``release`` and appending a line
    to the file ``touch``, when given); the commit's id."""
    if release is not None:
        set_release(repo, release)
    if touch:
        with (repo / touch).open("a", encoding="utf-8") as out:
            out.write(f"# {message}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--no-gpg-sign", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def clone(origin: Path, target: Path, commit_id: str, shared: bool = False) -> Path:
    """A checkout of ``commit_id``: as bitbake's git fetcher unpacks (``shared``: git clone -s
    -n, then checkout -B main) or as a developer's clone."""
    if shared:
        git(target.parent, "clone", "-q", "-s", "-n", str(origin), target.name)
        git(target, "checkout", "-q", "-B", "main", commit_id)
    else:
        git(target.parent, "clone", "-q", str(origin), target.name)
        git(target, "checkout", "-q", "--detach", commit_id)
    return target
