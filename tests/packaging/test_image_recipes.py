"""The Yocto layer (packaging/yocto) and the Buildroot external tree (packaging/buildroot).

Neither can be built here (no bitbake, no Buildroot, no cross toolchain): these tests check what
can drift instead. Their version is agent.__version__; their dependencies are pyproject.toml's
[project].dependencies through the name table below; what they install exists in the repository
and is what the unit and the agent expect (user, group, paths, hook folders).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import pytest

from agent import __version__
from tests.packaging.common import PACKAGING, ROOT, UNIT, unit_value

YOCTO = PACKAGING / "yocto"
BUILDROOT = PACKAGING / "buildroot"
RECIPE = YOCTO / f"pos-agent_{__version__}.bb"
BR_PACKAGE = BUILDROOT / "pos-agent"

# pyproject name: (Yocto package, where its recipe is), (Buildroot symbol, where its package is).
# "here": this repository ships it, because that layer or Buildroot itself does not have it.
DEPENDENCIES = {
    "pyiso8583": (("python3-pyiso8583", "here"), ("BR2_PACKAGE_PYTHON_PYISO8583", "here")),
    "pyserial": (("python3-pyserial", "meta-python"), ("BR2_PACKAGE_PYTHON_SERIAL", "buildroot")),
    "tenacity": (("python3-tenacity", "meta-python"), ("BR2_PACKAGE_PYTHON_TENACITY", "here")),
    "platformdirs": (
        ("python3-platformdirs", "meta-python"),
        ("BR2_PACKAGE_PYTHON_PLATFORMDIRS", "buildroot"),
    ),
    "cryptography": (
        ("python3-cryptography", "openembedded-core"),
        ("BR2_PACKAGE_PYTHON_CRYPTOGRAPHY", "buildroot"),
    ),
    "ntplib": (("python3-ntplib", "meta-python"), ("BR2_PACKAGE_PYTHON_NTPLIB", "here")),
    "sdnotify": (("python3-sdnotify", "meta-python"), ("BR2_PACKAGE_PYTHON_SDNOTIFY", "buildroot")),
}


# ------------------------------------------------------------------------------------ reading


def requirements() -> dict[str, dict[str, str]]:
    """pyproject's dependencies: {name: {operator: version}}."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    result = {}
    for requirement in project["dependencies"]:
        name, specifiers = re.fullmatch(r"([A-Za-z0-9._-]+)\s*(.*)", requirement).groups()
        result[name.lower()] = dict(re.findall(r"(>=|<=|==|~=|!=|<|>)\s*([^,\s]+)", specifiers))
    return result


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


# ------------------------------------------------------------------------------------ both


def test_the_name_table_covers_pyproject() -> None:
    assert set(requirements()) == set(DEPENDENCIES), (
        "pyproject.toml's dependencies changed: update DEPENDENCIES here, the Yocto recipe "
        "(POS_AGENT_PYTHON_DEPS), packaging/buildroot/pos-agent/Config.in and the Debian build"
    )


def test_user_and_group_are_the_units() -> None:
    assert unit_value("User") == unit_value("Group") == "pos-agent"
    yocto = bitbake_vars(RECIPE)
    assert yocto["USERADD_PARAM:${PN}"].split()[-1] == unit_value("User")
    assert yocto["GROUPADD_PARAM:${PN}"].split()[-1] == unit_value("Group")
    assert "--gid pos-agent" in yocto["USERADD_PARAM:${PN}"]
    br_user = make_vars(BR_PACKAGE / "pos-agent.mk")["POS_AGENT_USERS"].split()
    assert (br_user[0], br_user[2]) == (unit_value("User"), unit_value("Group"))


# ------------------------------------------------------------------------------------ Yocto


def test_yocto_recipe_is_this_version() -> None:
    assert RECIPE.exists(), f"packaging/yocto has no recipe named for version {__version__}"
    assert [p.name for p in YOCTO.glob("pos-agent_*.bb")] == [RECIPE.name]


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


def test_yocto_ships_the_recipes_its_layers_lack() -> None:
    for name, ((package, where), _) in DEPENDENCIES.items():
        if where == "here":
            version = shipped_recipe_version(package)
            assert satisfies(version, requirements()[name]), (package, version)
    layer = bitbake_vars(YOCTO / "conf/layer.conf")
    assert "${LAYERDIR}/*.bb" in layer["BBFILES"]
    needed = {where for (_, where), _ in DEPENDENCIES.values()} - {"here"}
    assert {"meta-python", "core"} <= set(layer["LAYERDEPENDS_pos-agent"].split())
    assert needed <= {"meta-python", "openembedded-core"}


def test_yocto_licence_checksum_matches_the_file() -> None:
    spec = bitbake_vars(RECIPE)["LIC_FILES_CHKSUM"]
    match = re.fullmatch(r"file://([^;]+);beginline=(\d+);endline=(\d+);md5=([0-9a-f]{32})", spec)
    assert match, spec
    name, begin, end, md5 = match.groups()
    lines = (ROOT / name).read_bytes().splitlines(keepends=True)[int(begin) - 1 : int(end)]
    assert hashlib.md5(b"".join(lines)).hexdigest() == md5, f"{name} lines {begin}-{end} changed"
    assert b"Apache-2.0" in b"".join(lines)
    assert bitbake_vars(RECIPE)["LICENSE"] == "Apache-2.0"


def test_yocto_installs_the_repositorys_files_where_the_agent_looks() -> None:
    from agent.config import DEFAULT_PATH
    from firmware_hooks.runner import EVENTS

    recipe = RECIPE.read_text(encoding="utf-8")
    sources = {source.rstrip(";") for source in re.findall(r"\$\{S\}/(\S+)", recipe)}
    assert {
        "packaging/systemd/pos-agent.service",
        "packaging/config/agent.toml",
        "packaging/config/hooks.d/README",
    } <= sources
    for source in sources:
        assert [p for p in ROOT.glob(source) if p.is_file()], source
    assert "${D}${systemd_system_unitdir}/pos-agent.service" in recipe
    assert f"${{D}}${{sysconfdir}}/{DEFAULT_PATH.relative_to('/etc')}" in recipe
    variables = bitbake_vars(RECIPE)
    assert variables["SYSTEMD_SERVICE:${PN}"] == UNIT.name
    assert variables["POS_AGENT_HOOK_EVENTS"].split() == list(EVENTS)
    assert "${sysconfdir}/pos-agent/agent.toml" in variables["CONFFILES:${PN}"].split()
    assert "python_setuptools_build_meta" in re.search(r"^inherit (.*)$", recipe, re.M).group(1)


# ------------------------------------------------------------------------------------ Buildroot


def test_buildroot_package_is_this_version() -> None:
    assert make_vars(BR_PACKAGE / "pos-agent.mk")["POS_AGENT_VERSION"] == __version__


def test_buildroot_selects_pyprojects_dependencies() -> None:
    selects = kconfig_selects(BR_PACKAGE / "Config.in")
    python_packages = {s for s in selects if not s.startswith("BR2_PACKAGE_PYTHON3_")}
    assert python_packages == {DEPENDENCIES[name][1][0] for name in requirements()}
    assert {"BR2_PACKAGE_PYTHON3_SQLITE", "BR2_PACKAGE_PYTHON3_SSL"} <= selects


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
    assert f"config {symbol}\n" in (package / "Config.in").read_text(encoding="utf-8")
    top = (BUILDROOT / "Config.in").read_text(encoding="utf-8")
    assert f'source "$BR2_EXTERNAL_POS_AGENT_PATH/{folder}/Config.in"' in top


def test_buildroot_installs_the_repositorys_files_where_the_agent_looks() -> None:
    from agent.config import DEFAULT_PATH
    from firmware_hooks.runner import EVENTS

    makefile = (BR_PACKAGE / "pos-agent.mk").read_text(encoding="utf-8")
    sources = set(re.findall(r"\$\(@D\)/(\S+)", makefile))
    assert sources == {
        "packaging/systemd/pos-agent.service",
        "packaging/config/agent.toml",
        "packaging/config/hooks.d/README",
    }
    for source in sources:
        assert (ROOT / source).is_file(), source
    variables = make_vars(BR_PACKAGE / "pos-agent.mk")
    assert f"$(TARGET_DIR){DEFAULT_PATH}" in variables["POS_AGENT_INSTALL_CONFIG"]
    assert (
        f"$(TARGET_DIR)/usr/lib/systemd/system/{UNIT.name}"
        in variables["POS_AGENT_INSTALL_INIT_SYSTEMD"]
    )
    assert variables["POS_AGENT_HOOK_EVENTS"].split() == list(EVENTS)
    assert variables["POS_AGENT_SETUP_TYPE"] == "setuptools"
    assert "$(eval $(python-package))" in makefile
    # the external tree's name is the one the package's paths use
    desc = (BUILDROOT / "external.desc").read_text(encoding="utf-8")
    assert re.search(r"^name: POS_AGENT$", desc, re.M)
    assert variables["POS_AGENT_SITE"] == "$(BR2_EXTERNAL_POS_AGENT_PATH)/../.."
    assert (BUILDROOT / "../../pyproject.toml").resolve() == ROOT / "pyproject.toml"
