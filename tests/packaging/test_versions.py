"""One version per commit across artefacts (DESIGN.md section 12): the Debian packages, the
zipapp, the Yocto recipe and the Buildroot package built from one commit make the agent report the
same string, the release alone at the release's own commit and ``<release>+g<commit>`` at any
other.

CI has neither bitbake nor Buildroot: the Yocto recipe's own step and the Buildroot package's own
hook run here as those builds run them (the recipe's shell function in bitbake's checkout of
SRCREV, the hook under GNU make in a copy of the site without .git), on a repository of the test's
own (tests/packaging/gitrepo.py). test_deb.py, test_deb_source.py and test_zipapp.py check the
real packages against this checkout."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import __version__
from tests.packaging.common import PACKAGING, ROOT, build_version, require, run
from tests.packaging.gitrepo import clone, commit, git, make_repo

RECIPE = PACKAGING / "yocto" / f"pos-agent_{__version__}.bb"
BR_MK = PACKAGING / "buildroot" / "pos-agent" / "pos-agent.mk"
FULL = re.compile(r"(?P<release>[^+]+)(\+g(?P<commit>[0-9a-f]{12})(\.dirty)?|\+unknown)?")


def yocto_step() -> str:
    """The body of the recipe's do_configure:prepend, which writes the version."""
    text = RECIPE.read_text(encoding="utf-8")
    match = re.search(r"^do_configure:prepend\(\) \{\n(.*?)\n\}$", text, re.M | re.S)
    assert match, f"{RECIPE.name} has no do_configure:prepend"
    return match.group(1)


def reported(tree: Path) -> str:
    """What the agent of ``tree`` reports: agent.version.VERSION, imported from it."""
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); from agent.version import VERSION; "
    code += "print(VERSION)"
    return run(sys.executable, "-I", "-B", "-c", code, cwd=tree).stdout.strip()


def yocto_build(origin: Path, commit_id: str, work: Path) -> str:
    """bitbake's unpack of SRCREV (git clone -s -n, checkout -B main), then the recipe's step
    with nativepython3 (python3-native) on PATH."""
    work.mkdir()
    source = clone(origin, work / "pos-agent-1.0", commit_id, shared=True)
    native = work / "python3-native"
    native.mkdir()
    (native / "nativepython3").symlink_to(sys.executable)
    script = yocto_step().replace("${S}", str(source))
    run("sh", "-e", "-c", script, env={"PATH": f"{native}:/usr/bin:/bin"}, cwd=work)
    return reported(source)


def buildroot_build(site: Path, work: Path) -> str:
    """Buildroot's local site method: the site rsynced into the build folder without .git
    (RSYNC_VCS_EXCLUSIONS), then the package's pre-build hooks, from its real .mk."""
    require("make", "make")
    work.mkdir()
    build = work / "build" / "pos-agent-custom"
    shutil.copytree(site, build, ignore=shutil.ignore_patterns(".git"))
    host = work / "host"
    (host / "bin").mkdir(parents=True)
    (host / "bin/python3").symlink_to(sys.executable)
    makefile = work / "Makefile"
    makefile.write_text(
        f"BR2_EXTERNAL_POS_AGENT_PATH := {site}/packaging/buildroot\n"
        f"HOST_DIR := {host}\n"
        f"include {site}/packaging/buildroot/pos-agent/pos-agent.mk\n"
        "# what package/pkg-generic.mk makes of a local site\n"
        "POS_AGENT_OVERRIDE_SRCDIR = $(POS_AGENT_SITE)\n"
        "define sep\n\n\nendef\n"
        f"{build}/.stamp_built:\n"
        "\t$(foreach hook,$(POS_AGENT_PRE_BUILD_HOOKS),$(call $(hook))$(sep))\n",
        encoding="utf-8",
    )
    run("make", "-f", makefile, f"{build}/.stamp_built", cwd=work)
    return reported(build)


def debian_build(site: Path, work: Path) -> str:
    """What packaging/debian/build.py, debian-source/build.py and zipapp/build.py do: the
    version of their own checkout (describe), written into the copy they build from."""
    work.mkdir()
    copy = work / "src"
    shutil.copytree(site, copy, ignore=shutil.ignore_patterns(".git"))
    full = run(sys.executable, site / "packaging/buildtools.py", "version").stdout.strip()
    run(sys.executable, site / "packaging/buildtools.py", "stamp", "--source", site, copy)
    assert reported(copy) == full
    return full


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The release before, the release commit of this one, and a commit after it."""
    require("git", "git")
    origin = make_repo(tmp_path_factory.mktemp("origin") / "pos-agent")
    commits = {
        "before": commit(origin, "the previous release", release="0.0.1"),
        "release": commit(origin, "release", release=__version__),
        "after": commit(origin, "a change", touch="agent/version.py"),
    }
    return origin, commits


@pytest.mark.parametrize("which", ["release", "after"])
def test_every_build_of_one_commit_reports_one_version(
    history: tuple[Path, dict[str, str]], which: str, tmp_path: Path
) -> None:
    origin, commits = history
    commit_id = commits[which]
    expected = __version__ if which == "release" else f"{__version__}+g{commit_id[:12]}"
    site = clone(origin, tmp_path / "site", commit_id)
    versions = {
        "yocto": yocto_build(origin, commit_id, (tmp_path / "yocto").resolve()),
        "buildroot": buildroot_build(site, (tmp_path / "buildroot").resolve()),
        "debian": debian_build(site, (tmp_path / "debian").resolve()),
    }
    assert versions == dict.fromkeys(versions, expected)


def test_a_tree_with_changes_says_so_and_yocto_builds_the_commit(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A site with a change not committed: the Debian and Buildroot builds add .dirty (they
    build the working tree); bitbake builds the commit itself."""
    origin, commits = history
    site = clone(origin, tmp_path / "site", commits["release"])
    with (site / "packaging/buildtools.py").open("a", encoding="utf-8") as out:
        out.write("# changed\n")
    dirty = f"{__version__}+g{commits['release'][:12]}.dirty"
    assert buildroot_build(site, (tmp_path / "buildroot").resolve()) == dirty
    assert debian_build(site, (tmp_path / "debian").resolve()) == dirty
    assert yocto_build(origin, commits["release"], (tmp_path / "yocto").resolve()) == __version__


def test_a_buildroot_site_that_is_no_checkout_says_unknown(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A site without git (a tarball's tree): <release>+unknown, never the bare release."""
    origin, commits = history
    site = clone(origin, tmp_path / "site", commits["after"])
    shutil.rmtree(site / ".git")
    result = buildroot_build(site, (tmp_path / "buildroot").resolve())
    assert result == f"{__version__}+unknown"


def test_the_recipe_and_the_package_run_the_step() -> None:
    """The Yocto recipe writes the version before the wheel is built, with SRCREV's own
    buildtools.py; the Buildroot package before its build, from the site's git."""
    assert "nativepython3 ${S}/packaging/buildtools.py stamp ${S}" in yocto_step()
    text = BR_MK.read_text(encoding="utf-8")
    assert "POS_AGENT_PRE_BUILD_HOOKS += POS_AGENT_STAMP_VERSION" in text
    assert "--source $(POS_AGENT_OVERRIDE_SRCDIR) $(@D)" in text


def test_the_generated_module_stays_out_of_git() -> None:
    ignored = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", "agent/_build.py"], check=False
    )
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0, ".gitignore must name agent/_build.py"


def test_this_checkout_builds_with_a_version_of_its_release() -> None:
    """What the packages built from here now say: this release, named by the commit unless
    HEAD is the release commit and nothing is changed."""
    match = FULL.fullmatch(build_version())
    assert match and match.group("release") == __version__, build_version()
    if match.group("commit"):
        head = git(ROOT, "rev-parse", "HEAD")
        assert head.startswith(match.group("commit"))
