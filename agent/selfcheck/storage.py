"""Storage: the journal can be written, the disk has room, and no reversal is stuck."""

from __future__ import annotations

import os

from agent import damaged, messages, paths
from agent.journal import PATIENCE, JournalError
from agent.selfcheck.base import CheckResult, Context, Status

ID = "storage"
LOW_SPACE, NO_SPACE = 50 * 2**20, 5 * 2**20


async def check(context: Context) -> CheckResult:
    path = paths.journal_path(context.config)
    journal = context.journal
    directory = str(path.parent)  # whose disk to free space on
    if journal is None and not path.exists():
        return CheckResult.of(ID, Status.WARN, str(path), finding="journal-absent")
    if journal is None:
        return CheckResult.of(
            ID,
            Status.FAIL,
            str(path),
            finding="journal-unusable",
            error=context.journal_error,
            directory=directory,
        )
    try:
        if not journal.read_only:  # a technician's look writes nothing: the service will
            await journal.within(PATIENCE, journal.remember, "write-probe", str(context.now()))
    except JournalError as exc:
        return CheckResult.of(
            ID,
            Status.FAIL,
            f"{path}: {exc}",
            finding="journal-unwritable",
            error=str(exc),
            directory=directory,
        )
    # statvfs rather than shutil.disk_usage: shutil brings bz2 and lzma, half a MB of RSS
    status = os.statvfs(path.parent)
    free = status.f_bavail * status.f_frsize
    mib = f"{free / 2**20:.1f}"
    queued = await journal.within(PATIENCE, journal.queued_reversals)
    # stuck: tried reversal.attempts times and still queued (the one rule, as status says)
    limit = context.config.reversal.attempts
    stuck = [r for r in queued if r.attempts >= limit]
    detail = f"{path}; {free / 2**20:.0f} MiB free; {len(queued)} reversal(s) queued"
    if free < NO_SPACE:
        return CheckResult.of(
            ID, Status.FAIL, detail, finding="disk-full", free=mib, directory=directory
        )
    if stuck:
        return CheckResult.of(
            ID,
            Status.WARN,
            detail,
            finding="reversals-stuck",
            count=len(stuck),
            tries=limit,
            stans=messages.listing(r.message.text(11) for r in stuck),
        )
    moved = damaged.copies(path)
    others = [*damaged.copies(paths.provisioning_path(context.config)),
              *damaged.copies(paths.parameters_path(context.config))]  # fmt: skip
    if moved or others:
        return CheckResult.of(
            ID,
            Status.WARN,
            f"{detail}; in {path.parent}",
            finding="journal-damaged" if moved else "state-damaged",
            names=", ".join(p.name for p in [*moved, *others]),
        )
    if free < LOW_SPACE:
        return CheckResult.of(
            ID, Status.WARN, detail, finding="disk-low", free=mib, directory=directory
        )
    waiting = (
        messages.message("storage:reversals-waiting", count=len(queued))
        if queued
        else messages.EMPTY
    )
    if journal.read_only and journal.unseen_changes:
        detail += "; changes in the -wal file are not seen until the service starts"
    return CheckResult.of(
        ID,
        Status.OK,
        detail,
        variant="read-only" if journal.read_only else "",
        free=f"{free / 2**20:.0f}",
        waiting=waiting,
    )
