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


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 512 KiB filesystem (tmpfs) that tests can fill up. Mounting needs root, which CI
    and the development machines have; elsewhere the test is skipped with the reason."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mountpoint)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"a real full disk needs a tmpfs mount, not permitted here: {result.stderr}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


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
