"""The Yocto layer (packaging/yocto) and the Buildroot external tree (packaging/buildroot).

CI has neither bitbake nor Buildroot: these tests check what can drift instead. Their version is
agent.__version__ (Yocto: SRCREV is the commit that set it; tests/packaging/test_versions.py runs
the steps that write the version the agent reports); their dependencies are pyproject.toml's
[project].dependencies through the name table below, all pure Python; what they install exists in
the repository and is what the unit and the agent expect (user, group, paths, hook folders, the
sysusers.d/tmpfiles.d pair). The release facts in the tables below were checked against the real
trees (oe-core, bitbake, meta-openembedded and Buildroot at those releases) with `bitbake -g
pos-agent` and Buildroot's defconfig/show-info/check-package; re-check them there when a table
changes. external.mk, the one piece of logic, runs here under GNU make.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent import __version__
from tests.packaging.common import PACKAGING, ROOT, UNIT, buildtools, require, run, unit_value

YOCTO = PACKAGING / "yocto"
BUILDROOT = PACKAGING / "buildroot"
RECIPE = YOCTO / f"pos-agent_{__version__}.bb"
# where the Mender, RAUC and SWUpdate scripts of packaging/ota call the health gate
GATE = "/usr/lib/pos-agent/ota/health-gate"
BR_PACKAGE = BUILDROOT / "pos-agent"
SYSUSERS = PACKAGING / "systemd" / "pos-agent.sysusers"
TMPFILES = PACKAGING / "systemd" / "pos-agent.tmpfiles"

# pyproject name: (Yocto package, where its recipe is), (Buildroot symbol, where its package is).
# "here": this repository ships it, because the layer or Buildroot lacks it in at least one of the
# releases supported (Yocto: LAYERSERIES_COMPAT; Buildroot: BUILDROOT_MIN and later).
DEPENDENCIES = {
    "pyiso8583": (("python3-pyiso8583", "here"), ("BR2_PACKAGE_PYTHON_PYISO8583", "here")),
    "pyserial": (("python3-pyserial", "meta-python"), ("BR2_PACKAGE_PYTHON_SERIAL", "buildroot")),
    "tenacity": (("python3-tenacity", "here"), ("BR2_PACKAGE_PYTHON_TENACITY", "here")),
    "platformdirs": (
        ("python3-platformdirs", "meta-python"),
        ("BR2_PACKAGE_PYTHON_PLATFORMDIRS", "here"),
    ),
    "ntplib": (("python3-ntplib", "meta-python"), ("BR2_PACKAGE_PYTHON_NTPLIB", "here")),
    "paho-mqtt": (
        ("python3-paho-mqtt", "meta-python"),
        ("BR2_PACKAGE_PYTHON_PAHO_MQTT", "buildroot"),
    ),
}
# What must never come back: compiled dependencies (cryptography pulls Rust into both) and the
# notify library the agent replaced with its own client.
GONE = ("cryptography", "sdnotify", "rust", "rustc", "cargo", "libstdcpp")

# Yocto: the releases the layer was parsed on, oldest first; scarthgap (5.0) and wrynose (6.0)
# are the previous and the current LTS.
YOCTO_RELEASES = ("scarthgap", "walnascar", "whinlatter", "wrynose")
YOCTO_LTS = ("scarthgap", "wrynose")
# Recipes here that a later meta-python has too: the first release that has it.
YOCTO_UPSTREAM_FROM = {"python3-tenacity": "wrynose"}
META_PYTHON_PRIORITY = 5
# Buildroot: the oldest release supported (the previous LTS), and the packages here that a later
# Buildroot has too.
BUILDROOT_MIN = "2025.02"
BUILDROOT_UPSTREAM_FROM = {"python-platformdirs": "2026.02"}
# The oldest release's interpreter and setuptools (scarthgap; Buildroot 2025.02), against
# pyproject's requires-python and [build-system] floor.
OLDEST = {"Yocto scarthgap": ("3.12.3", "69.1.1"), "Buildroot 2025.02": ("3.12.9", "75.8.0")}

# Standard-library modules of the terminal's code (not agent/sim, not the demo) and the oe-core
# python3 package that holds each (python3-manifest.json, the same from scarthgap to wrynose);
# every other module the code imports must be in YOCTO_CORE.
YOCTO_STDLIB = {
    "_blake2": "python3-crypt",
    "asyncio": "python3-asyncio",
    "concurrent": "python3-asyncio",
    "contextvars": "python3-numbers",
    "ctypes": "python3-ctypes",
    "datetime": "python3-datetime",
    "hashlib": "python3-crypt",
    "hmac": "python3-netclient",
    "json": "python3-json",
    "logging": "python3-logging",
    "queue": "python3-threading",
    "random": "python3-math",
    "resource": "python3-resource",
    "secrets": "python3-netclient",
    "socket": "python3-io",
    "sqlite3": "python3-sqlite3",
    "ssl": "python3-io",
    "tempfile": "python3-io",
    "tomllib": "python3-tomllib",
    "urllib": "python3-netclient",
    "uuid": "python3-netclient",
}
YOCTO_CORE = {
    *("__future__", "abc", "argparse", "binascii", "collections", "contextlib", "dataclasses"),
    *("enum", "errno", "fcntl", "functools", "grp", "importlib", "inspect", "io", "ipaddress"),
    "itertools",
    *("math", "os"),
    *("pathlib", "pwd"),
    *("re", "select", "shutil", "signal", "stat", "struct", "subprocess", "sys", "threading"),
    *("time", "types", "typing", "unicodedata", "warnings"),
}
# The parts of Buildroot's python3 that are options (package/python3/Config.in).
BUILDROOT_PYTHON3_OPTIONS = {
    "bz2": "BR2_PACKAGE_PYTHON3_BZIP2",
    "curses": "BR2_PACKAGE_PYTHON3_CURSES",
    "dbm": "BR2_PACKAGE_PYTHON3_BERKELEYDB",
    "lzma": "BR2_PACKAGE_PYTHON3_XZ",
    "readline": "BR2_PACKAGE_PYTHON3_READLINE",
    "sqlite3": "BR2_PACKAGE_PYTHON3_SQLITE",
    "ssl": "BR2_PACKAGE_PYTHON3_SSL",
    "unicodedata": "BR2_PACKAGE_PYTHON3_UNICODEDATA",
    "xml": "BR2_PACKAGE_PYTHON3_PYEXPAT",
    "zlib": "BR2_PACKAGE_PYTHON3_ZLIB",
}


# ------------------------------------------------------------------------------------ reading


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def parse_requirement(requirement: str) -> tuple[str, dict[str, str]]:
    name, specifiers = re.fullmatch(r"([A-Za-z0-9._-]+)\s*(.*)", requirement).groups()
    return name.lower(), dict(re.findall(r"(>=|<=|==|~=|!=|<|>)\s*([^,\s]+)", specifiers))


def requirements() -> dict[str, dict[str, str]]:
    """pyproject's dependencies: {name: {operator: version}}."""
    return dict(parse_requirement(r) for r in pyproject()["project"]["dependencies"])


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def satisfies(version: str, specifiers: dict[str, str]) -> bool:
    have = version_tuple(version)
    checks = {
        ">=": lambda want: have >= want,
        ">": lambda want: have > want,
        "<": lambda want: have < want,
        "<=": lambda want: have <= want,
        "==": lambda want: have == want,
    }
    return all(checks[op](version_tuple(v)) for op, v in specifiers.items())


def logical_lines(path: Path) -> list[str]:
    """Lines with backslash continuations joined, as bitbake and make read them."""
    joined, pending = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return joined


def code_lines(path: Path) -> list[str]:
    return [line for line in logical_lines(path) if not line.lstrip().startswith("#")]


def bitbake_vars(path: Path) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in logical_lines(path):
        match = re.fullmatch(r'([A-Za-z0-9_:${}\[\]-]+)\s*(\?\?=|\?=|:=|\+=|=)\s*"(.*)"\s*', line)
        if match:
            name, operator, value = match.groups()
            value = " ".join(value.split())
            result[name] = (
                f"{result[name]} {value}" if operator == "+=" and name in result else value
            )
    return result


def make_vars(path: Path) -> dict[str, str]:
    result, block = {}, None
    for line in logical_lines(path):
        if block is not None:
            if line.strip() == "endef":
                result[block[0]] = "\n".join(block[1])
                block = None
            else:
                block[1].append(line.strip())
        elif line.startswith("define "):
            block = (line.split()[1], [])
        elif match := re.fullmatch(r"([A-Z0-9_]+)\s*(\+=|=)\s*(.*)", line):
            result[match.group(1)] = " ".join(match.group(3).split())
    return result


def kconfig_selects(path: Path) -> set[str]:
    return set(re.findall(r"^\s*select (BR2_PACKAGE_\w+)", path.read_text(), re.MULTILINE))


def shipped_recipe_version(prefix: str) -> str:
    (recipe,) = YOCTO.glob(f"{prefix}_*.bb")
    return recipe.stem.split("_", 1)[1]


def installs(path: Path, source_prefix: str) -> dict[str, str]:
    """{repository file: destination} of the `install -D -m MODE SRC DEST` lines."""
    pattern = (
        rf"(?:install|\$\(INSTALL\))\s+-D\s+-m\s+\d+\s+{re.escape(source_prefix)}/(\S+)\s+(\S+)"
    )
    return dict(re.findall(pattern, " ".join(logical_lines(path))))


def sysusers_user() -> list[str]:
    """The u line of pos-agent.sysusers: type, name, id, comment, home, shell."""
    (line,) = [line for line in code_lines(SYSUSERS) if line.strip().startswith("u ")]
    return shlex.split(line)


def terminal_stdlib_imports() -> set[str]:
    """Standard-library modules imported by the code a terminal runs (not the simulators)."""
    modules: set[str] = set()
    for package in ("agent", "drivers", "firmware_hooks"):
        for path in (ROOT / package).rglob("*.py"):
            if "sim" in path.relative_to(ROOT).parts or path.name == "demo.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return modules & set(sys.stdlib_module_names)


def uses_chinese_charsets() -> bool:
    from agent.wire.profile import CHARSETS

    return any(charset.startswith("gb") for charset in CHARSETS)


def git(*args: str) -> subprocess.CompletedProcess[str] | None:
    """A git command in the repository, or None where there is no usable history."""
    if shutil.which("git") is None:
        return None
    probe = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--is-shallow-repository"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0 or probe.stdout.strip() != "false":
        return None
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
    )


# ------------------------------------------------------------------------------------ both


def test_the_name_table_covers_pyproject() -> None:
    assert set(requirements()) == set(DEPENDENCIES), (
        "pyproject.toml's dependencies changed: update DEPENDENCIES here, the Yocto recipe "
        "(POS_AGENT_PYTHON_DEPS), packaging/buildroot/pos-agent/Config.in and the Debian build"
    )


def test_nothing_compiled_or_removed_comes_back() -> None:
    for path in sorted(p for p in (*YOCTO.rglob("*"), *BUILDROOT.rglob("*")) if p.is_file()):
        text = path.read_text(encoding="utf-8")
        for word in GONE:
            found = re.search(rf"(?<![a-z]){word}(?![a-z])", text, re.IGNORECASE)
            assert not found, f"{path.relative_to(ROOT)} names {word}"


def test_the_oldest_releases_meet_pyprojects_floors() -> None:
    project = pyproject()
    python_floor = project["project"]["requires-python"].removeprefix(">=")
    backend = project["build-system"]["build-backend"]
    (setuptools,) = [
        parse_requirement(r)[1]
        for r in project["build-system"]["requires"]
        if parse_requirement(r)[0] == "setuptools"
    ]
    for release, (python, setuptools_version) in OLDEST.items():
        assert satisfies(python, {">=": python_floor}), (release, python)
        assert satisfies(setuptools_version, setuptools), (release, setuptools_version)
    # both build with setuptools' PEP 517 backend
    assert backend == "setuptools.build_meta"
    inherited = re.search(r"^inherit (.*)$", RECIPE.read_text(encoding="utf-8"), re.M).group(1)
    assert "python_setuptools_build_meta" in inherited.split()
    assert make_vars(BR_PACKAGE / "pos-agent.mk")["POS_AGENT_SETUP_TYPE"] == "setuptools"


TECHNICIANS = "pos-agent-tech"  # the group of read-only status and self-check (sysusers.d)


def test_user_and_group_are_the_units_and_sysusers() -> None:
    kind, name, ids, comment, home, shell = sysusers_user()
    assert (kind, ids) == ("u", "-")  # a system user, with a group of its name
    assert unit_value("User") == unit_value("Group") == name

    yocto = bitbake_vars(RECIPE)
    user = shlex.split(yocto["USERADD_PARAM:${PN}"])
    groups = [shlex.split(g) for g in yocto["GROUPADD_PARAM:${PN}"].split(";")]
    assert groups == [["--system", name], ["--system", TECHNICIANS]]
    assert user[-1] == name and "--system" in user and "--no-create-home" in user
    options = dict(itertools.pairwise(user))
    # oe-core's systemd_sysusers_check compares home and shell with the sysusers.d line
    assert (options["--gid"], options["--home-dir"], options["--shell"]) == (name, home, shell)
    assert options["--groups"] == TECHNICIANS  # as sysusers' "m pos-agent pos-agent-tech"
    assert f"m {name} {TECHNICIANS}" in code_lines(SYSUSERS)

    fields = make_vars(BR_PACKAGE / "pos-agent.mk")["POS_AGENT_USERS"].split(maxsplit=8)
    br_user, uid, br_group, gid, password, br_home, br_shell, groups, br_comment = fields
    assert (br_user, br_group, br_shell, br_comment) == (name, name, shell, comment)
    assert (uid, gid) == ("-1", "-1")  # system ids, as sysusers.d gives
    assert password == "*"
    # makeusers would create a home other than "-": the account's home is then /
    assert br_home == "-" and home == "/nonexistent"
    assert groups == TECHNICIANS  # dialout comes from the unit's SupplementaryGroups=


# ------------------------------------------------------------------------------------ Yocto


def test_yocto_recipe_is_this_version() -> None:
    assert RECIPE.exists(), f"packaging/yocto has no recipe named for version {__version__}"
    assert [p.name for p in YOCTO.glob("pos-agent_*.bb")] == [RECIPE.name]


def test_yocto_layer_claims_the_releases_it_was_parsed_on() -> None:
    layer = bitbake_vars(YOCTO / "conf/layer.conf")
    assert layer["LAYERSERIES_COMPAT_pos-agent"].split() == list(YOCTO_RELEASES)
    assert set(YOCTO_LTS) <= set(YOCTO_RELEASES)
    assert {"core", "meta-python"} <= set(layer["LAYERDEPENDS_pos-agent"].split())
    assert "${LAYERDIR}/*.bb" in layer["BBFILES"]


def test_yocto_source_lands_in_every_releases_default_s() -> None:
    """scarthgap has no UNPACKDIR, whinlatter and later refuse S = "${UNPACKDIR}/git" and any
    S with ${WORKDIR}: with destsuffix=${BP} every release's own default S is right."""
    for recipe in YOCTO.glob("*.bb"):
        code = code_lines(recipe)
        assert not [line for line in code if re.match(r"S\s*(\?\?=|\?=|:=|=)", line)], recipe
        assert not [line for line in code if "UNPACKDIR" in line or "WORKDIR" in line], recipe
    variables = bitbake_vars(RECIPE)
    assert variables["SRC_URI"].endswith(";destsuffix=${BP}")
    assert variables["POS_AGENT_GIT"].startswith("git://")


def test_yocto_source_is_pinned_to_the_release_commit() -> None:
    """SRCREV is the commit that set agent.__version__ to PV (the recipe's name): a build of it
    reports PV alone, as the Debian packages and Buildroot built from it do. That commit cannot
    name itself: while it is HEAD (or not yet made) the recipe waits for the next commit, which
    `python3 packaging/buildtools.py pin-yocto` prepares."""
    srcrev = bitbake_vars(RECIPE)["SRCREV"]
    assert re.fullmatch(r"[0-9a-f]{40}", srcrev), f"SRCREV must be a full commit id: {srcrev}"
    assert not [line for line in code_lines(RECIPE) if re.match(r"PV\s*=", line)]  # the name's
    if git("--version") is None:
        pytest.skip("no git history here (no git, not a repository, or a shallow clone)")
    release = buildtools().release_commit(ROOT)
    head = git("rev-parse", "HEAD").stdout.strip()
    committed = git("show", f"{release}:agent/__init__.py").stdout if release else ""
    if f'__version__ = "{__version__}"' not in committed or release == head:
        pytest.skip(
            f"the release commit of {__version__} is HEAD or not yet made: it cannot name itself; "
            "the next commit pins SRCREV to it (python3 packaging/buildtools.py pin-yocto)"
        )
    assert srcrev == release, (
        f"SRCREV {srcrev} is not {release}, the commit that set agent.__version__ to "
        f"{__version__}: python3 packaging/buildtools.py pin-yocto"
    )
    licence = git("show", f"{srcrev}:LICENSE")
    assert licence.returncode == 0, "SRCREV has no LICENSE"
    md5 = re.search(r"md5=([0-9a-f]{32})", bitbake_vars(RECIPE)["LIC_FILES_CHKSUM"]).group(1)
    assert hashlib.md5(licence.stdout.encode()).hexdigest() == md5
    # what do_install takes from the source is in that commit
    for source in installs(RECIPE, "${S}"):
        assert git("cat-file", "-e", f"{srcrev}:{source}").returncode == 0, (
            f"{source} is not in SRCREV {srcrev}: pin a later commit"
        )
    # the step that writes the version the agent reports runs SRCREV's own buildtools.py
    assert "def stamp(" in git("show", f"{srcrev}:packaging/buildtools.py").stdout


def test_yocto_dependencies_are_pyprojects() -> None:
    wanted = {
        DEPENDENCIES[name][0][0]: specifiers.get(">=")
        for name, specifiers in requirements().items()
    }
    declared = bitbake_vars(RECIPE)["POS_AGENT_PYTHON_DEPS"]
    found = {
        name: lower
        for name, lower in re.findall(r"(python3-[a-z0-9-]+)(?:\s*\(>=\s*([^)]+)\))?", declared)
    }
    assert found == wanted
    assert "${POS_AGENT_PYTHON_DEPS}" in bitbake_vars(RECIPE)["RDEPENDS:${PN}"]


def test_yocto_has_the_standard_library_the_agent_imports() -> None:
    imported = terminal_stdlib_imports()
    unknown = imported - YOCTO_CORE - set(YOCTO_STDLIB)
    assert not unknown, f"look {unknown} up in oe-core's python3-manifest.json, add to the table"
    declared = set(bitbake_vars(RECIPE)["POS_AGENT_STDLIB"].split())
    needed = {YOCTO_STDLIB[module] for module in imported & set(YOCTO_STDLIB)} | {"python3-core"}
    if uses_chinese_charsets():
        # _multibytecodec is in python3-codecs, _codecs_cn in no package but python3-misc
        needed |= {"python3-codecs", "python3-misc"}
    assert needed <= declared, needed - declared
    assert "${POS_AGENT_STDLIB}" in bitbake_vars(RECIPE)["RDEPENDS:${PN}"]


def test_yocto_ships_the_recipes_its_layers_lack() -> None:
    for name, ((package, where), _) in DEPENDENCIES.items():
        if where == "here":
            version = shipped_recipe_version(package)
            assert satisfies(version, requirements()[name]), (package, version)
    needed = {where for (_, where), _ in DEPENDENCIES.values()} - {"here"}
    assert needed <= {"meta-python", "openembedded-core"}


@pytest.mark.parametrize("package", sorted(YOCTO_UPSTREAM_FROM))
def test_yocto_gives_way_to_meta_pythons_recipe(package: str) -> None:
    """Where meta-python has the recipe too, bitbake takes the highest layer priority, then
    DEFAULT_PREFERENCE: this layer's copy must lose on both."""
    assert YOCTO_UPSTREAM_FROM[package] in YOCTO_RELEASES
    priority = int(bitbake_vars(YOCTO / "conf/layer.conf")["BBFILE_PRIORITY_pos-agent"])
    (recipe,) = YOCTO.glob(f"{package}_*.bb")
    preference = int(bitbake_vars(recipe).get("DEFAULT_PREFERENCE", "0"))
    assert priority < META_PYTHON_PRIORITY or (priority == META_PYTHON_PRIORITY and preference < 0)


def test_yocto_licence_checksum_matches_the_file() -> None:
    spec = bitbake_vars(RECIPE)["LIC_FILES_CHKSUM"]
    match = re.fullmatch(r"file://LICENSE;md5=([0-9a-f]{32})", spec)
    assert match, spec
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.md5(text).hexdigest() == match.group(1), "LICENSE changed"
    assert b"Apache License" in text and b"Version 2.0" in text
    assert (
        "License :: OSI Approved :: Apache Software License"
        in pyproject()["project"]["classifiers"]
    )
    assert bitbake_vars(RECIPE)["LICENSE"] == "Apache-2.0"


def test_yocto_installs_the_repositorys_files_where_the_agent_looks() -> None:
    from agent.config import DEFAULT_PATH
    from firmware_hooks.runner import EVENTS

    recipe = RECIPE.read_text(encoding="utf-8")
    sources = {source.rstrip(";") for source in re.findall(r"\$\{S\}/(\S+)", recipe)}
    for source in sources:
        assert [p for p in ROOT.glob(source) if p.is_file()], source
    assert installs(RECIPE, "${S}") == {
        "packaging/systemd/pos-agent.service": "${D}${systemd_system_unitdir}/pos-agent.service",
        "packaging/systemd/pos-agent.service.d/textfile.conf": (
            "${D}${systemd_system_unitdir}/pos-agent.service.d/textfile.conf"
        ),
        "packaging/systemd/pos-agent.sysusers": "${D}${nonarch_libdir}/sysusers.d/pos-agent.conf",
        "packaging/systemd/pos-agent.tmpfiles": "${D}${nonarch_libdir}/tmpfiles.d/pos-agent.conf",
        "packaging/config/agent.toml": f"${{D}}${{sysconfdir}}/{DEFAULT_PATH.relative_to('/etc')}",
        "packaging/config/hooks.d/README": "${D}${sysconfdir}/pos-agent/hooks.d/README",
        "firmware_hooks/README.md": "${D}${docdir}/${BPN}/hooks/README.md",
        "packaging/ota/health-gate": "${D}${nonarch_libdir}" + GATE.removeprefix("/usr/lib"),
    }
    variables = bitbake_vars(RECIPE)
    files = variables["FILES:${PN}"].split()
    assert {
        "${nonarch_libdir}/sysusers.d/pos-agent.conf",
        "${nonarch_libdir}/tmpfiles.d/pos-agent.conf",
        "${systemd_system_unitdir}/pos-agent.service",
        "${systemd_system_unitdir}/pos-agent.service.d/textfile.conf",
    } <= set(files)
    assert variables["SYSTEMD_SERVICE:${PN}"] == UNIT.name
    assert variables["POS_AGENT_HOOK_EVENTS"].split() == list(EVENTS)
    assert "${sysconfdir}/pos-agent/agent.toml" in variables["CONFFILES:${PN}"].split()


# ------------------------------------------------------------------------------------ Buildroot


def test_buildroot_package_is_this_version() -> None:
    variables = make_vars(BR_PACKAGE / "pos-agent.mk")
    assert variables["POS_AGENT_VERSION"] == __version__
    assert variables["POS_AGENT_LICENSE"] == "Apache-2.0"
    assert variables["POS_AGENT_LICENSE_FILES"] == "LICENSE"
    assert (ROOT / "LICENSE").is_file()


def test_buildroot_states_its_minimum_release() -> None:
    external = make_vars(BUILDROOT / "external.mk")
    assert external["BR2_EXTERNAL_POS_AGENT_MIN_VERSION"] == BUILDROOT_MIN
    desc = (BUILDROOT / "external.desc").read_text(encoding="utf-8")
    assert f"Buildroot {BUILDROOT_MIN} or later" in desc
    assert f"Buildroot {BUILDROOT_MIN}" in (BUILDROOT / "Config.in").read_text(encoding="utf-8")
    for release in BUILDROOT_UPSTREAM_FROM.values():
        assert version_tuple(release) > version_tuple(BUILDROOT_MIN)


def test_buildroot_selects_pyprojects_dependencies() -> None:
    config = (BR_PACKAGE / "Config.in").read_text(encoding="utf-8")
    selects = kconfig_selects(BR_PACKAGE / "Config.in")
    python_packages = {s for s in selects if not s.startswith("BR2_PACKAGE_PYTHON3_")}
    assert python_packages == {DEPENDENCIES[name][1][0] for name in requirements()}
    depends = re.findall(r"^\s*depends on (.*)$", config.split("comment")[0], re.M)
    assert depends == ["BR2_PACKAGE_PYTHON3"]


def test_buildroot_has_the_standard_library_the_agent_imports() -> None:
    selects = kconfig_selects(BR_PACKAGE / "Config.in")
    needed = {
        BUILDROOT_PYTHON3_OPTIONS[module]
        for module in terminal_stdlib_imports() & set(BUILDROOT_PYTHON3_OPTIONS)
    }
    if uses_chinese_charsets():
        needed.add("BR2_PACKAGE_PYTHON3_CODECSCJK")
    python3_options = {s for s in selects if s.startswith("BR2_PACKAGE_PYTHON3_")}
    assert needed == python3_options


@pytest.mark.parametrize(
    "name", [n for n, (_, (_, where)) in DEPENDENCIES.items() if where == "here"]
)
def test_buildroot_ships_the_packages_buildroot_lacks(name: str) -> None:
    symbol = DEPENDENCIES[name][1][0]
    folder = "python-" + symbol.removeprefix("BR2_PACKAGE_PYTHON_").lower()
    package = BUILDROOT / folder
    variables = make_vars(package / f"{folder}.mk")
    prefix = folder.upper().replace("-", "_")
    version = variables[f"{prefix}_VERSION"]
    assert satisfies(version, requirements()[name]), (folder, version)
    source = variables[f"{prefix}_SOURCE"].replace(f"$({prefix}_VERSION)", version)
    hashes = (package / f"{folder}.hash").read_text(encoding="utf-8")
    assert re.search(rf"^sha256\s+[0-9a-f]{{64}}\s+{re.escape(source)}$", hashes, re.M)
    licence_files = variables[f"{prefix}_LICENSE_FILES"].split()
    for licence in licence_files:
        assert re.search(rf"^sha256\s+[0-9a-f]{{64}}\s+{re.escape(licence)}$", hashes, re.M)
    kconfig = (package / "Config.in").read_text(encoding="utf-8")
    if folder in BUILDROOT_UPSTREAM_FROM:
        # no prompt: a later Buildroot's own option (the same symbol) is the one shown
        assert re.search(rf"^config {symbol}\n\tbool\n", kconfig, re.M), kconfig
    else:
        assert re.search(rf'^config {symbol}\n\tbool "{folder}"\n', kconfig, re.M), kconfig
    top = (BUILDROOT / "Config.in").read_text(encoding="utf-8")
    assert f'source "$BR2_EXTERNAL_POS_AGENT_PATH/{folder}/Config.in"' in top
    inside_python3 = top.split("if BR2_PACKAGE_PYTHON3\n", 1)[1].split("endif", 1)[0]
    assert f"/{folder}/Config.in" in inside_python3


def evaluate_external_mk(tmp_path: Path, version: str, upstream: tuple[str, ...] = ()):
    """external.mk read by GNU make as Buildroot's Makefile reads it: TOPDIR a tree whose
    package/ has the given packages, BR2_VERSION, python-package doing nothing."""
    topdir = tmp_path / "buildroot"
    for package in upstream:
        (topdir / "package" / package).mkdir(parents=True)
        (topdir / "package" / package / f"{package}.mk").write_text("")
    (topdir / "package").mkdir(parents=True, exist_ok=True)
    makefile = tmp_path / "Makefile"
    makefile.write_text(
        f"TOPDIR := {topdir}\n"
        f"BR2_EXTERNAL_POS_AGENT_PATH := {BUILDROOT}\n"
        f"BR2_VERSION := {version}\n"
        "python-package :=\n"
        "include $(BR2_EXTERNAL_POS_AGENT_PATH)/external.mk\n"
        "$(info INCLUDED $(filter-out $(firstword $(MAKEFILE_LIST)) %/external.mk,"
        "$(MAKEFILE_LIST)))\n"
        "all: ;\n"
    )
    make = require("make", "make")
    result = run(make, "-s", "-f", makefile, "all", check=False, cwd=tmp_path)
    included = re.search(r"^INCLUDED (.*)$", result.stdout, re.M)
    return result, [Path(p).parent.name for p in included.group(1).split()] if included else []


def test_buildroot_external_mk_defines_only_what_buildroot_lacks(tmp_path: Path) -> None:
    everything = sorted(p.parent.name for p in BUILDROOT.glob("*/*.mk"))
    assert "pos-agent" in everything and "python-platformdirs" in everything
    result, included = evaluate_external_mk(tmp_path / "old", BUILDROOT_MIN)
    assert result.returncode == 0, result.stderr
    assert included == everything
    upstream = tuple(BUILDROOT_UPSTREAM_FROM)
    result, included = evaluate_external_mk(tmp_path / "new", "2026.08-rc1", upstream)
    assert result.returncode == 0, result.stderr
    assert included == [p for p in everything if p not in upstream]


@pytest.mark.parametrize(
    ("version", "accepted"),
    [("2024.11.3", False), (BUILDROOT_MIN, True), ("2025.02.16", True), ("2026.08-rc1", True)],
)
def test_buildroot_external_mk_refuses_an_older_buildroot(
    tmp_path: Path, version: str, accepted: bool
) -> None:
    result, _ = evaluate_external_mk(tmp_path, version)
    assert (result.returncode == 0) is accepted, result.stderr
    if not accepted:
        assert f"needs Buildroot {BUILDROOT_MIN} or later, this is {version}" in result.stderr


def test_buildroot_installs_the_repositorys_files_where_the_agent_looks() -> None:
    from agent.config import DEFAULT_PATH
    from firmware_hooks.runner import EVENTS

    makefile = BR_PACKAGE / "pos-agent.mk"
    assert installs(makefile, "$(@D)") == {
        "packaging/systemd/pos-agent.service": "$(TARGET_DIR)/usr/lib/systemd/system/" + UNIT.name,
        "packaging/systemd/pos-agent.service.d/textfile.conf": (
            "$(TARGET_DIR)/usr/lib/systemd/system/pos-agent.service.d/textfile.conf"
        ),
        "packaging/systemd/pos-agent.sysusers": "$(TARGET_DIR)/usr/lib/sysusers.d/pos-agent.conf",
        "packaging/systemd/pos-agent.tmpfiles": "$(TARGET_DIR)/usr/lib/tmpfiles.d/pos-agent.conf",
        "packaging/config/agent.toml": f"$(TARGET_DIR){DEFAULT_PATH}",
        "packaging/config/hooks.d/README": "$(TARGET_DIR)/etc/pos-agent/hooks.d/README",
        "packaging/ota/health-gate": f"$(TARGET_DIR){GATE}",
    }
    for source in installs(makefile, "$(@D)"):
        assert (ROOT / source).is_file(), source
    variables = make_vars(makefile)
    # the systemd files only with systemd as the init system
    for source in ("pos-agent.service", "pos-agent.service.d/textfile.conf", "pos-agent.sysusers",
                   "pos-agent.tmpfiles"):  # fmt: skip
        assert f"/packaging/systemd/{source}" in variables["POS_AGENT_INSTALL_INIT_SYSTEMD"]
    assert variables["POS_AGENT_HOOK_EVENTS"].split() == list(EVENTS)
    assert "$(eval $(python-package))" in makefile.read_text(encoding="utf-8")
    # the external tree's name is the one the package's paths use
    desc = (BUILDROOT / "external.desc").read_text(encoding="utf-8")
    assert re.search(r"^name: POS_AGENT$", desc, re.M)
    assert variables["POS_AGENT_SITE"] == "$(BR2_EXTERNAL_POS_AGENT_PATH)/../.."
    assert (BUILDROOT / "../../pyproject.toml").resolve() == ROOT / "pyproject.toml"


def test_the_update_scripts_call_the_gate_where_the_images_install_it() -> None:
    for script in ("mender/ArtifactCommit_Enter_50_pos-agent", "rauc/mark-good",
                   "swupdate/postinstall"):  # fmt: skip
        assert f"${{POS_AGENT_HEALTH_GATE:-{GATE}}}" in (PACKAGING / "ota" / script).read_text()
