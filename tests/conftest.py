import asyncio
import contextlib
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import agent
from agent.journal import Journal

AGENT = Path(agent.__file__).parent
JOURNAL_CODE = Journal.__init__.__code__.co_filename


def _off_the_event_loop(step):
    """The service never waits for its disk on the event loop (a frozen one would stop every
    socket): in tests, a journal step the agent's code takes there is an error at once. Opening
    the journal is not such a step (the service opens it before it serves), nor is a test's own
    look at the rows."""

    @functools.wraps(step)
    def guarded(journal, *args, **kwargs):
        if asyncio._get_running_loop() is not None and not journal.read_only:
            frame = sys._getframe(1)
            while frame.f_code.co_filename in (JOURNAL_CODE, contextlib.__file__):
                if frame.f_code.co_name in ("__init__", "open_for_service"):
                    break
                frame = frame.f_back
            else:
                caller = Path(frame.f_code.co_filename)
                if caller.is_relative_to(AGENT):
                    raise RuntimeError(
                        f"journal step on the event loop's thread from {caller}:{frame.f_lineno}"
                    )
        return step(journal, *args, **kwargs)

    return guarded


Journal._write = _off_the_event_loop(Journal._write)
Journal._rows = _off_the_event_loop(Journal._rows)

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


@pytest.fixture
def freezable_disk(tmp_path):
    """A real ext4 filesystem (16 MiB, on a loop device) that a test may freeze with
    ``fsfreeze -f``, as an LVM snapshot or a backup does. Mounting needs root and a loop device;
    elsewhere the test is skipped with the reason. Thawed before it is unmounted."""
    image, folder = tmp_path / "ext4.img", tmp_path / "ext4"
    folder.mkdir()
    with image.open("wb") as file:
        file.truncate(16 * 2**20)
    made = subprocess.run(["mkfs.ext4", "-q", str(image)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"no ext4 image can be made here: {made.stderr}")
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"a freezable disk needs a loop mount, not permitted here: {mounted.stderr}")
    yield folder
    subprocess.run(["fsfreeze", "-u", str(folder)], capture_output=True, check=False)
    subprocess.run(["umount", "-l", str(folder)], check=False)
