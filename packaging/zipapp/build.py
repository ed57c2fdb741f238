#!/usr/bin/env python3
"""Build pos-agent as one file, ``pos-agent.pyz``, with the standard library's zipapp format.

    python3 packaging/zipapp/build.py [--out DIR] [--with-native]

    python3 pos-agent.pyz explain 97        # the same as `agent explain 97`

The archive holds the agent and its pure-Python dependencies (pyiso8583, pyserial, tenacity,
platformdirs) and runs on any Linux with Python 3.11 or later: architecture and libc do not
matter, and Python imports all of it straight from the zip.

That is all a terminal needs. The simulators and the demo (the extra ``sim``) also need
cryptography for DES in software, whose core is compiled (Rust and OpenSSL): compiled modules
cannot be imported from a zip, nor shipped for every machine in one file. Two ways:

- default (portable): the archive leaves the extra out. `run`, `selftest`, `signin` and every
  other terminal command run with Python alone; `demo` and `sim` stop with a message that names
  what is missing, unless the machine provides cryptography 43 or later.
- ``--with-native``: the archive also carries the extra's wheels as built for this machine
  (cryptography, cffi), so it runs on machines of the same architecture, libc and Python minor
  version only. At first start it unpacks them into a cache folder (``$POS_AGENT_PYZ_CACHE``,
  else ``$XDG_CACHE_HOME/pos-agent-pyz``, else ``~/.cache/pos-agent-pyz``), as shiv does.

Dependencies are resolved by pip from its usual configuration (PIP_INDEX_URL, or PIP_NO_INDEX=1
with PIP_FIND_LINKS=DIR offline).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import stat
import sys
import sysconfig
import tempfile
import time
import zipfile
from email.parser import HeaderParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from buildtools import ROOT, BuildError, copy_sources, describe, run, source_date_epoch

# The extra whose distributions have compiled parts: never imported from the zip.
NATIVE_EXTRA = "sim"
NATIVE_PREFIX = "_native/"
COMPILED = re.compile(r"\.(so|pyd|dylib)(\.\d+)*$")
INTERPRETER = "/usr/bin/env python3"
DEFAULT_NAME = "pos-agent.pyz"

MAIN = '''\
"""pos-agent as one file: python3 pos-agent.pyz COMMAND ... is `agent COMMAND ...`."""

import os
import sys

NATIVE = "_native/"


def unpack_native():
    """Compiled modules this archive carries (build.py --with-native): unpacked once into a
    cache folder named after their contents, because they cannot be imported from a zip."""
    import shutil
    import tempfile
    import zipfile

    archive = os.path.dirname(os.path.abspath(__file__))
    with zipfile.ZipFile(archive) as bundle:
        names = [n for n in bundle.namelist() if n.startswith(NATIVE) and not n.endswith("/")]
        if not names:
            return
        tag = bundle.read(NATIVE + "TAG").decode().strip()
        cache = os.environ.get("POS_AGENT_PYZ_CACHE") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
            "pos-agent-pyz",
        )
        target = os.path.join(cache, tag)
        if not os.path.isdir(target):
            os.makedirs(cache, exist_ok=True)
            temporary = tempfile.mkdtemp(prefix=".unpacking-", dir=cache)
            for name in names:
                bundle.extract(name, temporary)
            try:
                os.rename(os.path.join(temporary, NATIVE), target)
            except OSError:
                if not os.path.isdir(target):  # not another process that was faster
                    raise
            finally:
                shutil.rmtree(temporary, ignore_errors=True)
    sys.path.insert(1, target)


def main():
    unpack_native()
    from agent.cli import main as agent_main

    return agent_main()


sys.exit(main())
'''


def dependencies(site: Path, extra: str | None = None) -> list[str]:
    """The project's own requirements as its installed metadata states them: the base ones, or
    those of ``extra``."""
    (dist_info,) = site.glob("pos_agent-*.dist-info")
    meta = HeaderParser().parsestr((dist_info / "METADATA").read_text(encoding="utf-8"))
    wanted = []
    for requirement in meta.get_all("Requires-Dist") or []:
        name, _, marker = requirement.partition(";")
        of_extra = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", marker)
        if (of_extra.group(1) if of_extra else None) == extra:
            wanted.append(name.strip())
    return wanted


def pip_install(python: str, target: Path, *what: str | Path) -> None:
    run(
        python, "-m", "pip", "--disable-pip-version-check", "--no-input", "install",
        "--no-compile", "--target", target, *what,
    )  # fmt: skip


def populate(python: str, work: Path, with_native: bool) -> tuple[Path, Path | None]:
    """The archive's tree, and the tree of compiled distributions (with_native) or None."""
    sources = work / "src"
    version = describe(ROOT)
    if version.note:
        print(f"build.py: {version.note}: the version is {version.full}", file=sys.stderr)
    copy_sources(sources, version)  # agent --version: the release, else <release>+g<commit>
    site = work / "site"
    pip_install(python, site, "--no-deps", sources)
    pip_install(python, site, *dependencies(site))
    native_site = None
    if with_native:
        native_site = work / "native"
        pip_install(python, native_site, "--only-binary=:all:", *dependencies(site, NATIVE_EXTRA))
    for tree in filter(None, (site, native_site)):
        shutil.rmtree(tree / "bin", ignore_errors=True)  # console scripts: #! names this build
        for cache in list(tree.rglob("__pycache__")):
            shutil.rmtree(cache)
    compiled = [str(p.relative_to(site)) for p in site.rglob("*") if COMPILED.search(p.name)]
    if compiled:
        raise BuildError(
            "compiled files would land in the zip, where Python cannot import them: "
            f"{compiled}: the terminal's dependencies must be pure Python (DESIGN.md section 12)"
        )
    return site, native_site


def write_archive(target: Path, site: Path, native_site: Path | None, epoch: float) -> None:
    """zipapp's layout (a #! line, then a zip with __main__.py at its top), written here rather
    than by zipapp.create_archive for fixed timestamps and the _native/ folder."""
    stamp = time.gmtime(max(epoch, 315532800))[:6]  # zip cannot go before 1980

    def add(bundle: zipfile.ZipFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = zipfile.ZipInfo(name, date_time=stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = (stat.S_IFREG | mode) << 16
        bundle.writestr(info, data)

    def files(tree: Path) -> list[Path]:
        return sorted(p for p in tree.rglob("*") if p.is_file())

    with target.open("wb") as out:
        out.write(f"#!{INTERPRETER}\n".encode())
        with zipfile.ZipFile(out, "w") as bundle:
            add(bundle, "__main__.py", MAIN.encode())
            for path in files(site):
                add(bundle, path.relative_to(site).as_posix(), path.read_bytes())
            if native_site is not None:
                digest = hashlib.sha256()
                for path in files(native_site):
                    name = path.relative_to(native_site).as_posix()
                    data = path.read_bytes()
                    digest.update(name.encode() + b"\0" + data)
                    add(bundle, NATIVE_PREFIX + name, data)
                platform = sysconfig.get_platform().replace("-", "_")
                tag = f"{sys.implementation.cache_tag}-{platform}-{digest.hexdigest()[:16]}"
                add(bundle, NATIVE_PREFIX + "TAG", tag.encode() + b"\n")
    target.chmod(0o755)


def build(out: Path, python: str, with_native: bool) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pos-agent-pyz-") as work:
        site, native_site = populate(python, Path(work), with_native)
        target = out / DEFAULT_NAME
        write_archive(target, site, native_site, source_date_epoch())
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where pos-agent.pyz goes")
    parser.add_argument(
        "--with-native",
        action="store_true",
        help="also carry the simulators' compiled wheels (runs only on this kind of machine)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter whose pip resolves the dependencies (default: this one)",
    )
    args = parser.parse_args(argv)
    try:
        target = build(args.out.resolve(), args.python, args.with_native)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
