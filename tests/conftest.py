import os
import subprocess

import pytest
from hypothesis import HealthCheck, settings

# Shared machines are noisy: no per-example deadline. POS_AGENT_FUZZ=long runs the fuzz targets
# much longer than the normal suite does.
settings.register_profile("default", deadline=None)
settings.register_profile(
    "long", deadline=None, max_examples=5_000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("long" if os.environ.get("POS_AGENT_FUZZ") == "long" else "default")


def _tmpfs(folder, size: str):
    """A real filesystem of ``size`` (tmpfs) at ``folder``. Mounting needs root, which CI and
    the development machines have; elsewhere the test is skipped with the reason."""
    folder.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"a real small disk needs a tmpfs mount, not permitted here: {result.stderr}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def tiny_disk(tmp_path):
    """512 KiB that tests can fill up."""
    yield from _tmpfs(tmp_path / "tiny", "512k")


@pytest.fixture
def small_partition(tmp_path):
    """A 2 MiB state partition, the size of a small terminal's."""
    yield from _tmpfs(tmp_path / "state", "2m")


def fill_disk(directory) -> None:
    """Write to ``directory`` until its filesystem has no block left."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, os.urandom(4096)):
            pass
    except OSError as exc:
        assert exc.errno == 28  # ENOSPC
    finally:
        os.close(fd)
