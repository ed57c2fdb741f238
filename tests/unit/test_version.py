"""The version the agent reports (agent/version.py) and how a build finds it
(packaging/buildtools.py): the release at the release's own commit (the one that set
``__version__``), ``<release>+g<commit>`` at any other, ``.dirty`` for a tree with changes not
committed, ``+unknown`` where git cannot tell, never the bare release for a commit that is not
the release's. The rules run on repositories of the tests' own; tests/packaging/test_versions.py
runs the Yocto, Buildroot and Debian builds' steps on them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import __version__
from agent.version import COMMIT, VERSION
from tests.packaging.common import ROOT, buildtools
from tests.packaging.gitrepo import clone, commit, git, make_repo, set_release

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """0.0.1 (the root commit sets it), the release commit of this version, a commit after."""
    origin = make_repo(tmp_path / "origin")
    commits = {
        "first": commit(origin, "the first release", release="0.0.1"),
        "release": commit(origin, "release", release=__version__),
        "after": commit(origin, "a change", touch="agent/version.py"),
    }
    return origin, commits


def describe(tree: Path) -> str:
    return buildtools().describe(tree).full


def test_the_release_commit_says_the_release_and_any_other_its_commit(
    repo: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    origin, commits = repo
    after = commits["after"]
    assert describe(origin) == f"{__version__}+g{after[:12]}"
    assert buildtools().describe(origin).commit == after
    release = clone(origin, tmp_path / "release", commits["release"])
    assert describe(release) == __version__
    first = clone(origin, tmp_path / "first", commits["first"])
    assert describe(first) == "0.0.1"  # a root commit that sets the version is its release


def test_a_change_not_committed_makes_it_dirty(
    repo: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    origin, commits = repo
    tree = clone(origin, tmp_path / "tree", commits["release"])
    dirty = f"{__version__}+g{commits['release'][:12]}.dirty"
    # ignored files (the generated module, bytecode) and files no artefact holds change nothing
    (tree / "agent/_build.py").write_text("VERSION = 'x'\n", encoding="utf-8")
    (tree / "agent/__pycache__").mkdir()
    (tree / "agent/__pycache__/version.cpython-311.pyc").write_bytes(b"")
    (tree / "notes.txt").write_text("scratch\n", encoding="utf-8")
    assert describe(tree) == __version__
    # a new file in a folder the packages copy is shipped: dirty
    (tree / "agent/new.py").write_text("", encoding="utf-8")
    assert describe(tree) == dirty
    (tree / "agent/new.py").unlink()
    with (tree / "packaging/buildtools.py").open("a", encoding="utf-8") as out:
        out.write("# changed\n")
    assert describe(tree) == dirty


def test_a_version_bump_not_yet_committed(
    repo: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    origin, commits = repo
    tree = clone(origin, tmp_path / "tree", commits["release"])
    set_release(tree, "9.9.9")
    assert describe(tree) == f"9.9.9+g{commits['release'][:12]}.dirty"


def test_a_shallow_clone_never_takes_its_oldest_commit_for_the_release(
    repo: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """In a clone of depth 1 the commit seems to add every line: it cannot be told from the
    release commit, so it is named by its commit."""
    origin, commits = repo
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", "shallow")
    shallow = tmp_path / "shallow"
    assert git(shallow, "rev-parse", "--is-shallow-repository") == "true"
    assert describe(shallow) == f"{__version__}+g{commits['after'][:12]}"
    # the release commit as the oldest commit present: as unknown as above
    git(tmp_path, "clone", "-q", "--depth", "2", f"file://{origin}", "two")
    two = tmp_path / "two"
    git(two, "checkout", "-q", "--detach", "HEAD~1")
    assert describe(two) == f"{__version__}+g{commits['release'][:12]}"
    # deep enough to hold the commit before it: the rules as in a full clone
    git(tmp_path, "clone", "-q", "--depth", "3", f"file://{origin}", "deep")
    deep = tmp_path / "deep"
    git(deep, "checkout", "-q", "--detach", "HEAD~1")
    assert describe(deep) == __version__


def test_without_git_a_stamped_tree_keeps_its_version_else_unknown(
    repo: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A source tree made by a build (the .dsc's, which a build chroot unpacks without git)
    keeps what it was stamped with; any other tree says it cannot tell."""
    origin, commits = repo
    tree = tmp_path / "tree"
    shutil.copytree(clone(origin, tmp_path / "checkout", commits["after"]), tree,
                    ignore=shutil.ignore_patterns(".git"))  # fmt: skip
    assert describe(tree) == f"{__version__}+unknown"
    assert "not a git checkout" in buildtools().describe(tree).note
    stamped = buildtools().stamp(tree, tmp_path / "checkout")
    assert stamped.full == f"{__version__}+g{commits['after'][:12]}"
    assert describe(tree) == stamped.full
    assert buildtools().describe(tree).commit == commits["after"]
    set_release(tree, "9.9.9")  # a generated file of another release is not believed
    assert describe(tree) == "9.9.9+unknown"


def test_a_tree_inside_another_repository_is_not_that_repositorys_commit(
    repo: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A source package unpacked in a folder of some other checkout (dist/ of this one)."""
    origin, _ = repo
    inner = origin / "dist" / "pos-agent-src"
    inner.parent.mkdir()
    shutil.copytree(origin / "agent", inner / "agent")
    assert describe(inner) == f"{__version__}+unknown"
    assert "not the top of a git checkout" in buildtools().describe(inner).note


def test_the_callers_git_variables_do_not_redirect_it(
    repo: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A git hook running the build has GIT_DIR set to its own repository."""
    origin, commits = repo
    other = make_repo(tmp_path / "other")
    commit(other, "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert describe(origin) == f"{__version__}+g{commits['after'][:12]}"


def test_the_generated_module_is_reproducible(tmp_path: Path) -> None:
    tools = buildtools()
    version = tools.Version(__version__, "0" * 40, f"{__version__}+g{'0' * 12}")
    (tmp_path / "a/agent").mkdir(parents=True)
    (tmp_path / "b/agent").mkdir(parents=True)
    first = tools.write_version(tmp_path / "a", version).read_bytes()
    assert first == tools.write_version(tmp_path / "b", version).read_bytes()
    assert tools.read_version(tmp_path / "a") == version


def test_pin_yocto_names_the_release_commit(
    repo: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """The release's second commit: the recipe renamed for the release, SRCREV its commit."""
    origin, commits = repo
    tree = clone(origin, tmp_path / "tree", commits["release"])
    (recipe,) = (tree / "packaging/yocto").glob("pos-agent_*.bb")
    recipe.rename(recipe.with_name("pos-agent_0.0.1.bb"))
    pinned = buildtools().pin_yocto(tree)
    assert [p.name for p in (tree / "packaging/yocto").glob("pos-agent_*.bb")] == [pinned.name]
    assert pinned.name == f"pos-agent_{__version__}.bb"
    assert f'\nSRCREV = "{commits["release"]}"\n' in pinned.read_text(encoding="utf-8")
    # from a later commit it still names the release commit
    later = clone(origin, tmp_path / "later", commits["after"])
    text = buildtools().pin_yocto(later).read_text(encoding="utf-8")
    assert f'\nSRCREV = "{commits["release"]}"\n' in text
    set_release(later, "9.9.9")
    with pytest.raises(buildtools().BuildError, match="not yet committed"):
        buildtools().pin_yocto(later)


# ------------------------------------------------------------------------------------ the agent


def test_this_checkout_is_never_stamped() -> None:
    """The build scripts write agent/_build.py into their copies only: in this checkout the
    agent is the release (the integration tests compare it with agent.__version__)."""
    assert not (ROOT / "agent/_build.py").exists()
    assert __version__ == VERSION
    assert not COMMIT


AGENT_REPORTS = """
import io, json, sys, types
from contextlib import redirect_stdout
build = types.ModuleType("agent._build")
build.VERSION, build.COMMIT = sys.argv[1], sys.argv[2]
sys.modules["agent._build"] = build
from agent.cli.parser import build_parser
from agent.telemetry.state import Identity, state_message
from agent.version import COMMIT, VERSION
out = io.StringIO()
with redirect_stdout(out):
    try:
        build_parser().parse_args(["--version"])
    except SystemExit:
        pass
status = {"state": "registered", "tid": "1", "mid": "2", "reversals_queued": 0,
          "reversals_stuck": 0}
message = state_message(status, Identity("S", "T", {}), 0.0, None, 0, 0.0)
print(json.dumps([VERSION, COMMIT, out.getvalue().strip(), message["version"]]))
"""


def agent_reports(version: str, commit_id: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-I", "-B", "-c", AGENT_REPORTS, version, commit_id],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_agent_version_and_telemetry_report_the_built_version() -> None:
    built = f"{__version__}+g0123456789ab"
    assert agent_reports(built, "0123456789ab" + "0" * 28) == [
        built, "0123456789ab" + "0" * 28, f"pos-agent {built}", built
    ]  # fmt: skip


def test_a_generated_module_of_another_release_is_not_believed() -> None:
    version, commit_id, cli, telemetry = agent_reports("0.0.0+g0123456789ab", "0" * 40)
    assert version == telemetry == f"{__version__}+unknown"
    assert (commit_id, cli) == ("", f"pos-agent {__version__}+unknown")


def test_reading_the_version_starts_no_process() -> None:
    """The service imports it at start: one module read, no git, no subprocess."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import agent.version; "
        "print('subprocess' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", code],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "False"
