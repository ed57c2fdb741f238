#!/usr/bin/env python3
"""Build the Debian package ``pos-agent_<version>_all.deb`` with dpkg-deb.

    python3 packaging/debian/build.py [--out DIR] [--python /usr/bin/python3] [--keep DIR]

What the package holds:

    /usr/lib/pos-agent/venv/            a virtual environment of Debian's python3 holding the agent
                                        and its dependencies, as wheels resolved by pip
    /usr/bin/agent                      a launcher: the venv's python3 -I -m agent
    /usr/share/man/man1/agent.1.gz      made from the command line's own parser
    $systemdsystemunitdir/pos-agent.service
                                        systemd.pc's unit folder (/lib/systemd/system on Debian 12)
    $systemdsystemunitdir/pos-agent.service.d/textfile.conf
                                        lets telemetry.textfile write where node_exporter reads
    $systemdsystemunitdir/pos-agent-fleet-watch.service
                                        the fleet's incident watcher (agent fleet watch), for an
                                        operator's machine: not enabled by the package
    /usr/lib/sysusers.d/pos-agent.conf  the service's user and group (postinst: systemd-sysusers,
                                        else useradd)
    /usr/lib/tmpfiles.d/pos-agent.conf  its state directory
    /etc/pos-agent/agent.toml           the default configuration (a conffile)
    /etc/pos-agent/hooks.d/             README and one folder per hook event
    /usr/lib/pos-agent/ota/health-gate  the over-the-air health gate (agent selftest --json)
    /usr/share/doc/pos-agent/           README.md, docs/ (the reference), copyright (with the
                                        bundled licences), changelog,
                                        hooks/ (the hooks' reference and an example for each event),
                                        ota/ (Mender, RAUC and SWUpdate scripts around the gate)

The virtual environment is made by the target's interpreter (``--python``, Debian's
/usr/bin/python3) directly at its final path inside the staging tree; pip then installs the
project from a copy of the working tree and is removed again. Nothing in the result names the
staging tree: ``bin/python3`` is a relative symlink to /usr/bin/python3, pyvenv.cfg names
/usr/bin, and /usr/bin/agent finds the venv from its own real location. So the package also runs
from a firmware image's root, a ``dpkg --root`` tree or a ``dpkg-deb -x`` folder (the tests do
that) as long as that tree's /usr/bin/python3 is a Python of the same minor version.

The venv is tied to the interpreter's minor version (lib/python3.11): the package says so in
its Depends. Everything in it is pure Python (cryptography is only in the extra ``sim``, never
installed here), so the package is ``Architecture: all``; a compiled module in the venv is a
build error. Two builds of one tree are byte-identical (SOURCE_DATE_EPOCH, else the last
commit's time; no path of the build machine in any file).
<version> is what the agent reports (agent --version, telemetry): the release at its own commit,
else <release>+g<commit>[.dirty] from git (packaging/buildtools.py; packaging/README.md).
pip reads its usual configuration: PIP_INDEX_URL, or PIP_NO_INDEX=1 with PIP_FIND_LINKS=DIR for
an offline build from a wheelhouse.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from email.parser import HeaderParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGING = HERE.parent
sys.path.insert(0, str(PACKAGING))

from buildtools import ROOT, BuildError, copy_sources, describe, run, source_date_epoch  # noqa: E402

NAME = "pos-agent"
PREFIX = "/usr/lib/pos-agent"
VENV = f"{PREFIX}/venv"
CONFIG_DIR = "/etc/pos-agent"
DOC_DIR = f"/usr/share/doc/{NAME}"
# A placeholder until the project has an address of its own; DEBFULLNAME and DEBEMAIL override it.
MAINTAINER = (
    f"{os.environ['DEBFULLNAME']} <{os.environ['DEBEMAIL']}>"
    if os.environ.get("DEBFULLNAME") and os.environ.get("DEBEMAIL")
    else "pos-agent developers <pos-agent@users.noreply.github.com>"
)
# Hook events of DESIGN.md section 9, from the runner itself (stdlib only: importable here).
sys.path.insert(0, str(ROOT))
from firmware_hooks.runner import EVENTS as HOOK_EVENTS  # noqa: E402

# The top-level commands of the command line and their one-line help, from its own parser.
LIST_COMMANDS = """
import argparse, json
from agent.cli import build_parser
for action in build_parser()._actions:
    if isinstance(action, argparse._SubParsersAction):
        print(json.dumps([[c.dest, c.help or ""] for c in action._choices_actions]))
"""
KEEP_IN_BIN = {"python", "python3"}
DESCRIPTION = """\
keeps a POS terminal registered with its acquirer
 pos-agent runs on a Linux POS terminal between the payment app and the
 acquirer's host. It diagnoses and repairs response 97 (terminal not
 registered): self-check, re-provisioning, sign-in, clock and host failover,
 bounded retry; it keeps a journal of every transaction and anomaly, and
 escalates what a person must fix, with the evidence.
 .
 The package runs the agent as the systemd service pos-agent.service, under
 its own user in a strict sandbox, and installs the technician's command
 line, agent (agent selftest, agent explain 97)."""


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BuildError(f"{tool} not found: apt-get install {package}")
    return path


def project_version() -> str:
    """What the agent built from this tree reports (``agent --version``, telemetry), and the
    package's version: the release (agent.__version__) at the release's own commit, else
    ``<release>+g<commit>[.dirty]`` from git, or ``<release>+unknown`` (buildtools.describe)."""
    return describe(ROOT).full


# ------------------------------------------------------------------------------------ the venv


def make_venv(
    python: str, stage: Path, sources: Path, version: str
) -> tuple[Path, list[tuple[str, str]]]:
    """The venv at its final path in ``stage``, and the command line's commands with their help
    (for the manual page), read while the venv's interpreter still runs from the staging tree;
    the installed agent must say ``version``."""
    venv = stage / VENV.lstrip("/")
    run(python, "-m", "venv", venv)
    python3 = venv / "bin" / "python3"
    pip = [python3, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    run(*pip, "install", "--no-compile", "--no-warn-script-location", sources)
    run(*pip, "uninstall", "--yes", "pip", "setuptools")
    says = run(python3, "-I", "-B", "-m", "agent", "--version").split()
    if says[-1:] != [version]:
        raise BuildError(f"the installed agent says {' '.join(says)!r}, not {version}")
    commands = json.loads(run(python3, "-I", "-B", "-c", LIST_COMMANDS))
    tidy_venv(venv, stage)
    return venv, [tuple(command) for command in commands]


def tidy_venv(venv: Path, stage: Path) -> None:
    bin_dir = venv / "bin"
    for entry in bin_dir.iterdir():
        if entry.name not in KEEP_IN_BIN and not re.fullmatch(r"python3\.\d+", entry.name):
            # activate scripts and console scripts name the staging path: /usr/bin/agent
            # replaces them
            entry.unlink()
    interpreter = bin_dir / "python3"
    target = os.readlink(interpreter)
    if not target.startswith("/usr/bin/"):
        raise BuildError(f"{interpreter} -> {target}: expected Debian's /usr/bin/python3")
    interpreter.unlink()
    interpreter.symlink_to(os.path.relpath(target, f"{VENV}/bin"))
    # pyvenv.cfg: keep home/version/executable, drop the command line naming the staging tree
    config = venv / "pyvenv.cfg"
    kept = [
        line
        for line in config.read_text(encoding="utf-8").splitlines()
        if not line.startswith("command")
    ]
    config.write_text("\n".join(kept) + "\n", encoding="utf-8")
    for cache in list(venv.rglob("__pycache__")):
        shutil.rmtree(cache)
    for folder in sorted(venv.rglob("*"), key=lambda path: -len(path.parts)):
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()  # include/python3.X
    # the project's install record names the temporary copy it was built from
    for direct_url in venv.glob("lib/python3*/site-packages/*.dist-info/direct_url.json"):
        direct_url.unlink()
    # RECORD lists what was installed: not the console scripts removed above (whose hashes
    # depend on the staging path) nor direct_url.json
    for record in venv.glob("lib/python3*/site-packages/*.dist-info/RECORD"):
        site = record.parent.parent
        lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if (site / line.rsplit(",", 2)[0]).exists()]
        record.write_text("".join(kept), encoding="utf-8")
    leaked = [
        str(path)
        for path in venv.rglob("*")
        if path.is_file() and not path.is_symlink() and str(stage).encode() in path.read_bytes()
    ]
    if leaked:
        raise BuildError(f"files still naming the staging tree {stage}: {leaked}")


def refuse_compiled(stage: Path) -> None:
    """The terminal's install is pure Python (DESIGN.md section 12): a compiled module in the
    venv would tie the package to this machine's architecture and libraries."""
    compiled = sorted(
        str(path.relative_to(stage)) for path in stage.rglob("*") if path.suffix in (".so", ".pyd")
    )
    if compiled:
        raise BuildError(f"compiled modules in the venv (a dependency that is not pure Python): "
                         f"{', '.join(compiled)}")  # fmt: skip


def systemd_unit_dir() -> str:
    """Where this distribution's systemd wants units: /lib/systemd/system on Debian 12,
    /usr/lib/systemd/system from Debian 13 on."""
    need("pkg-config", "pkg-config")
    try:
        value = run("pkg-config", "--variable=systemdsystemunitdir", "systemd").strip()
    except BuildError:
        value = ""
    if not value.startswith("/"):
        raise BuildError("pkg-config knows no systemdsystemunitdir: apt-get install systemd")
    return value


# ------------------------------------------------------------------------------------ files


def gzip_file(data: bytes, target: Path) -> None:
    with (
        target.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0) as out,
    ):
        out.write(data)


def bundled_licences(venv: Path) -> str:
    """One paragraph per bundled distribution: name, version, licence, and its licence files."""
    parts = []
    for dist_info in sorted(venv.glob("lib/python3*/site-packages/*.dist-info")):
        meta = HeaderParser().parsestr(
            (dist_info / "METADATA").read_text(encoding="utf-8", errors="replace")
        )
        if meta["Name"] == NAME:
            continue
        licence = (
            meta["License-Expression"]
            or next(
                (
                    c.rsplit("::", 1)[1].strip()
                    for c in meta.get_all("Classifier") or []
                    if c.startswith("License ::")
                ),
                None,
            )
            or (meta["License"] or "see the project").splitlines()[0]
        )
        texts = sorted(
            path
            for path in dist_info.rglob("*")
            if path.is_file() and re.match(r"(LICEN[CS]E|COPYING|NOTICE)", path.name, re.I)
        )
        parts.append(
            f"Bundled: {meta['Name']} {meta['Version']} "
            f"(in {VENV}/lib/python3.*/site-packages)\nLicense: {licence}\n"
        )
        if not texts:
            parts.append(" The distribution ships no licence text in its wheel.\n")
        for path in texts:
            body = path.read_text(encoding="utf-8", errors="replace").strip("\n")
            if "Apache License" in body and "Version 2.0, January 2004" in body:
                body = APACHE_POINTER
            parts.append(f" {path.name}:\n")
            parts.extend(f" {line}\n" if line.strip() else " .\n" for line in body.splitlines())
        parts.append("\n")
    return "".join(parts)


APACHE_POINTER = (
    "The Apache License, Version 2.0: on Debian systems its full text is in\n"
    "/usr/share/common-licenses/Apache-2.0."
)


def copyright_text(venv: Path) -> str:
    pointer = "".join(f" {line}\n" for line in APACHE_POINTER.splitlines())
    return (
        "pos-agent\n\n"
        "Copyright: pos-agent developers\n"
        f"License: Apache-2.0\n{pointer}\n"
        "The package bundles the Python distributions below, unmodified, as pip installed\n"
        "them from their wheels.\n\n"
    ) + bundled_licences(venv)


def changelog(version: str, epoch: int) -> bytes:
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch))
    return (
        f"{NAME} ({version}) stable; urgency=medium\n\n"
        f"  * Version {version}, built from the project's tree;\n"
        "    its history is in the project's repository.\n\n"
        f" -- {MAINTAINER}  {date}\n"
    ).encode()


def roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def manual_page(version: str, epoch: int, commands: list[tuple[str, str]]) -> bytes:
    date = time.strftime("%Y-%m-%d", time.gmtime(epoch))
    lines = [
        f'.TH AGENT 1 "{date}" "pos-agent {version}" "pos-agent"',
        ".SH NAME",
        "agent \\- keep a POS terminal registered with its acquirer (pos-agent)",
        ".SH SYNOPSIS",
        ".B agent",
        ".I command",
        ".RI [ options ]",
        ".br",
        ".B agent \\-\\-version",
        ".SH DESCRIPTION",
        "pos-agent diagnoses and repairs response 97 (terminal not registered) on a POS",
        "terminal. The service",
        ".B pos-agent.service",
        "runs",
        '.BR "agent run" ;',
        "technicians run",
        ".B agent selftest",
        "and the other commands below.",
        "Each command lists its options with",
        '.BR "agent \\fIcommand\\fB \\-\\-help" .',
        ".SH COMMANDS",
    ]
    for name, help_text in commands:
        lines += [".TP", f".B {roff(name)}", roff(help_text)]
    lines += [
        ".SH FILES",
        ".TP",
        ".I /etc/pos\\-agent/agent.toml",
        "the configuration; POS_AGENT_<SECTION>_<KEY> variables override it",
        ".TP",
        ".I /etc/pos\\-agent/hooks.d/",
        "firmware hooks, one folder per event (README there)",
        ".TP",
        ".I /var/lib/pos\\-agent/",
        "the journal and the saved provisioning",
        ".TP",
        ".I /run/pos\\-agent/agent.sock",
        "the payment app's socket (group pos\\-agent)",
        ".SH EXIT STATUS",
        "0: done (selftest: healthy, warnings allowed); 1: failed (selftest: a check failed);",
        "2: could not run (usage, configuration).",
        ".SH SEE ALSO",
        ".BR systemctl (1),",
        ".BR journalctl (1),",
        f".I {DOC_DIR}/README.md",
    ]
    return ("\n".join(lines) + "\n").encode()


def install_files(
    stage: Path, version: str, venv: Path, epoch: int, commands: list[tuple[str, str]]
) -> list[str]:
    """Everything but the venv; returns the conffiles."""
    usr_bin = stage / "usr/bin"
    usr_bin.mkdir(parents=True)
    shutil.copyfile(HERE / "agent", usr_bin / "agent")
    (usr_bin / "agent").chmod(0o755)
    man = stage / "usr/share/man/man1"
    man.mkdir(parents=True)
    gzip_file(manual_page(version, epoch, commands), man / "agent.1.gz")
    # the sysusers.d and tmpfiles.d folders are the same on every systemd distribution, and
    # postinst names the first
    for folder, source, name in (
        (systemd_unit_dir(), "pos-agent.service", "pos-agent.service"),
        # the fleet's incident watcher, for an operator's machine: installed, never enabled
        (systemd_unit_dir(), "pos-agent-fleet-watch.service", "pos-agent-fleet-watch.service"),
        ("/usr/lib/sysusers.d", "pos-agent.sysusers", "pos-agent.conf"),
        ("/usr/lib/tmpfiles.d", "pos-agent.tmpfiles", "pos-agent.conf"),
    ):
        target = stage / folder.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGING / "systemd" / source, target / name)
    # the unit's drop-ins: where the textfile collector reads (telemetry.textfile)
    drop_ins = "pos-agent.service.d"
    shutil.copytree(
        PACKAGING / "systemd" / drop_ins, stage / systemd_unit_dir().lstrip("/") / drop_ins
    )
    config_dir = stage / CONFIG_DIR.lstrip("/")
    hooks = config_dir / "hooks.d"
    hooks.mkdir(parents=True)
    shutil.copyfile(PACKAGING / "config/agent.toml", config_dir / "agent.toml")
    shutil.copyfile(PACKAGING / "config/hooks.d/README", hooks / "README")
    for event in HOOK_EVENTS:
        (hooks / event).mkdir()
    doc = stage / DOC_DIR.lstrip("/")
    doc.mkdir(parents=True)
    shutil.copyfile(ROOT / "README.md", doc / "README.md")
    # the hooks' reference and examples, for vendors (made executable when put to use)
    (doc / "hooks").mkdir()
    shutil.copyfile(ROOT / "firmware_hooks/README.md", doc / "hooks/README.md")
    shutil.copytree(ROOT / "firmware_hooks/examples", doc / "hooks/examples")
    # the project's reference (docs/), with what its pages link to where the links lead
    shutil.copytree(
        ROOT / "docs",
        doc / "docs",
        ignore=shutil.ignore_patterns("generate_config_reference.py", "__pycache__"),
    )
    (doc / "packaging").mkdir()
    shutil.copyfile(PACKAGING / "README.md", doc / "packaging/README.md")
    (doc / "firmware_hooks").mkdir()
    shutil.copyfile(ROOT / "firmware_hooks/README.md", doc / "firmware_hooks/README.md")
    gate = stage / PREFIX.lstrip("/") / "ota/health-gate"
    gate.parent.mkdir(parents=True)
    shutil.copyfile(PACKAGING / "ota/health-gate", gate)
    shutil.copytree(PACKAGING / "ota", doc / "ota", ignore=shutil.ignore_patterns("health-gate"))
    (doc / "copyright").write_text(copyright_text(venv), encoding="utf-8")
    gzip_file(changelog(version, epoch), doc / "changelog.gz")
    overrides = HERE / "lintian-overrides"
    if overrides.exists():
        target = stage / "usr/share/lintian/overrides"
        target.mkdir(parents=True)
        shutil.copyfile(overrides, target / NAME)
    return [f"{CONFIG_DIR}/agent.toml", f"{CONFIG_DIR}/hooks.d/README"]


def normalise_modes(stage: Path) -> None:
    """Folders 0755; the launcher 0755, and in the venv the scripts the wheels made executable
    (the example hooks); everything else 0644: modules, compiled ones included, are read, never
    executed (some wheels mark them executable anyway)."""
    venv = stage / VENV.lstrip("/")
    for path in [stage, *stage.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
            continue
        script = (
            venv in path.parents
            and path.stat().st_mode & 0o111
            and path.suffix == ""
            and path.read_bytes()[:3] == b"#!/"
        )
        path.chmod(0o755 if script else 0o644)
    (stage / "usr/bin/agent").chmod(0o755)
    (stage / PREFIX.lstrip("/") / "ota/health-gate").chmod(0o755)


def installed_size_kib(stage: Path) -> int:
    """As dpkg-gencontrol counts: each file's size in KiB rounded up, 1 for anything else."""
    total = 0
    for path in stage.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += -(-path.stat().st_size // 1024)
        else:
            total += 1
    return total


def interpreter_version(python: str) -> tuple[int, int]:
    out = run(python, "-c", "import sys; print(*sys.version_info[:2])")
    major, minor = out.split()
    return int(major), int(minor)


def write_control(stage: Path, version: str, depends: list[str], conffiles: list[str]) -> None:
    debian = stage / "DEBIAN"
    debian.mkdir()
    fields = {
        "Package": NAME,
        "Version": version,
        "Architecture": "all",
        "Maintainer": MAINTAINER,
        "Installed-Size": str(installed_size_kib(stage)),
        "Depends": ", ".join(depends),
        "Section": "misc",
        "Priority": "optional",
        "Description": DESCRIPTION,
    }
    (debian / "control").write_text(
        "".join(f"{key}: {value}\n" for key, value in fields.items()), encoding="utf-8"
    )
    (debian / "conffiles").write_text("".join(f"{c}\n" for c in conffiles), encoding="utf-8")
    for script in ("postinst", "prerm", "postrm"):
        shutil.copyfile(HERE / script, debian / script)
        (debian / script).chmod(0o755)
    sums = []
    for path in sorted(stage.rglob("*")):
        if path.is_file() and not path.is_symlink() and debian not in path.parents:
            digest = hashlib.md5(path.read_bytes()).hexdigest()  # dpkg's format
            sums.append(f"{digest}  {path.relative_to(stage)}\n")
    (debian / "md5sums").write_text("".join(sums), encoding="utf-8")
    (debian / "md5sums").chmod(0o644)


# ------------------------------------------------------------------------------------ main


def build(out: Path, python: str, work: Path) -> Path:
    need("dpkg-deb", "dpkg")
    if shutil.which(python) is None and not Path(python).exists():
        raise BuildError(
            f"{python} not found: the package is built for Debian's python3 "
            "(apt-get install python3 python3-venv)"
        )
    described = describe(ROOT)
    if described.note:
        print(f"build.py: {described.note}: the version is {described.full}", file=sys.stderr)
    version = described.full
    epoch = source_date_epoch()
    major, minor = interpreter_version(python)
    stage = work / "debian" / NAME
    sources = work / "src"
    copy_sources(sources, described)
    venv, commands = make_venv(python, stage, sources, version)
    refuse_compiled(stage)
    conffiles = install_files(stage, version, venv, epoch, commands)
    normalise_modes(stage)
    # The venv lives in lib/pythonX.Y: any other python3 would not find it.
    depends = [f"python3 (>= {major}.{minor}~)", f"python3 (<< {major}.{minor + 1})"]
    # postinst's useradd (when systemd-sysusers is not there) and postrm's userdel; the unit's
    # ExecReload=/bin/kill
    depends += ["passwd", "procps"]
    write_control(stage, version, depends, conffiles)
    out.mkdir(parents=True, exist_ok=True)
    deb = out / f"{NAME}_{version}_all.deb"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    run("dpkg-deb", "--root-owner-group", "-Zxz", "--build", stage, deb, env=env)
    return deb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the .deb goes")
    parser.add_argument(
        "--python", default="/usr/bin/python3", help="the target's interpreter (Debian's python3)"
    )
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = parser.parse_args(argv)
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            deb = build(args.out.resolve(), args.python, args.keep.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="pos-agent-deb-") as work:
                deb = build(args.out.resolve(), args.python, Path(work))
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
