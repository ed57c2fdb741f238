"""The agent's full version, as ``agent --version`` and telemetry report it (DESIGN.md section 12).

``agent.__version__`` is the release. A build of the release's own commit (the commit that set
``__version__``) reports the release alone; a build of any other commit reports
``<release>+g<commit>`` (its first 12 hex digits: a PEP 440 local version, and a Debian version),
with ``.dirty`` after it when the tree held changes not committed, and ``<release>+unknown`` when
the build could not ask git. Every package build (packaging/buildtools.py: the Debian packages,
the zipapp, the Yocto recipe, the Buildroot package) writes that string into ``agent/_build.py``,
which git ignores; here it is only read: no git, no subprocess, nothing but one import at start.

Without that file (a git checkout, an editable install, an install from a source tree nobody
stamped) the version is the release: ``python3 packaging/buildtools.py version`` prints what a
package built from the checkout would say."""

from __future__ import annotations

from agent import __version__ as RELEASE


def _built() -> tuple[str, str]:
    """(version, commit) from agent/_build.py, else (the release, "")."""
    try:
        from agent import _build  # type: ignore[attr-defined]
    except ImportError:
        return RELEASE, ""
    version = str(getattr(_build, "VERSION", ""))
    if version != RELEASE and not version.startswith(f"{RELEASE}+"):
        # written for another release (a file left behind in a source tree): it cannot say
        # which commit this is
        return f"{RELEASE}+unknown", ""
    return version, str(getattr(_build, "COMMIT", ""))


VERSION, COMMIT = _built()
"""``VERSION``: the release, or ``<release>+g<commit>[.dirty]``, or ``<release>+unknown``.
``COMMIT``: the full commit id the build was made from, or "" where none is known."""
