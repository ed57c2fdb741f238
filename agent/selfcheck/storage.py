"""Storage: the journal can be written, the disk has room, the journal is within its cap, and no
reversal is stuck."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from agent import damaged, messages, paths
from agent.journal import PATIENCE, JournalError
from agent.selfcheck.base import CheckResult, Context, Status

ID = "storage"
LOW_SPACE, NO_SPACE = 50 * 2**20, 5 * 2**20


async def check(context: Context) -> CheckResult:
    """The most urgent finding, with the others it found in its detail: a damaged journal set
    aside is always said (DESIGN.md section 8), whatever else is wrong."""
    path = paths.journal_path(context.config)
    first, *others = await _findings(context, path, _damaged(context, path))
    if not others:
        return first
    also = "; ".join(f"also {o.code}: {o.summary.en}" for o in others)
    return dataclasses.replace(first, detail=f"{first.detail}; {also}")


async def _findings(
    context: Context, path: Path, damaged_copies: CheckResult | None
) -> list[CheckResult]:
    """What the check finds, the most urgent first (at least one: ok when all is well)."""
    journal = context.journal
    directory = str(path.parent)  # whose disk to free space on
    set_aside = [damaged_copies] if damaged_copies is not None else []
    if journal is None and not path.exists():
        return [CheckResult.of(ID, Status.WARN, str(path), finding="journal-absent"), *set_aside]
    if journal is None:
        unusable = CheckResult.of(
            ID,
            Status.FAIL,
            str(path),
            finding="journal-unusable",
            error=context.journal_error,
            directory=directory,
        )
        return [unusable, *set_aside]
    try:
        if not journal.read_only:  # a technician's look writes nothing: the service will
            await journal.within(PATIENCE, journal.remember, "write-probe", str(context.now()))
    except JournalError as exc:
        unwritable = CheckResult.of(
            ID,
            Status.FAIL,
            f"{path}: {exc}",
            finding="journal-unwritable",
            error=str(exc),
            directory=directory,
        )
        return [unwritable, *set_aside]
    # statvfs rather than shutil.disk_usage: shutil brings bz2 and lzma, half a MB of RSS
    status = os.statvfs(path.parent)
    free = status.f_bavail * status.f_frsize
    mib = f"{free / 2**20:.1f}"
    queued = await journal.within(PATIENCE, journal.queued_reversals)
    # stuck: tried reversal.attempts times and still queued (the one rule, as status says)
    limit = context.config.reversal.attempts
    stuck = [r for r in queued if r.attempts >= limit]
    detail = f"{path}; {free / 2**20:.0f} MiB free; {len(queued)} reversal(s) queued"
    found = []
    if free < NO_SPACE:
        found.append(
            CheckResult.of(
                ID, Status.FAIL, detail, finding="disk-full", free=mib, directory=directory
            )
        )
    found += [dataclasses.replace(d, detail=f"{detail}; {d.detail}") for d in set_aside]
    if stuck:
        found.append(
            CheckResult.of(
                ID,
                Status.WARN,
                detail,
                finding="reversals-stuck",
                count=len(stuck),
                tries=limit,
                stans=messages.listing(r.message.text(11) for r in stuck),
            )
        )
    # what retention measures: the rows (a file once larger keeps its free pages for new rows)
    size = await journal.within(PATIENCE, lambda: journal.size_bytes)
    cap = context.config.journal.max_mb
    if size > cap * 2**20:
        found.append(
            CheckResult.of(
                ID,
                Status.WARN,
                detail,
                finding="journal-over-cap",
                size=f"{size / 2**20:.1f}",
                cap=f"{cap:g}",
            )
        )
    if NO_SPACE <= free < LOW_SPACE:
        found.append(
            CheckResult.of(
                ID, Status.WARN, detail, finding="disk-low", free=mib, directory=directory
            )
        )
    if found:
        return found
    waiting = (
        messages.message("storage:reversals-waiting", count=len(queued))
        if queued
        else messages.EMPTY
    )
    if journal.read_only and journal.unseen_changes:
        detail += "; changes in the -wal file are not seen until the service starts"
    ok = CheckResult.of(
        ID,
        Status.OK,
        detail,
        variant="read-only" if journal.read_only else "",
        free=f"{free / 2**20:.0f}",
        waiting=waiting,
    )
    return [ok]


def _damaged(context: Context, path: Path) -> CheckResult | None:
    """Damaged state set aside beside the journal (its own, or provisioning's or the
    parameters'), which a person must settle: said until the files are moved away."""
    moved = damaged.copies(path)
    others = damaged.state_copies(context.config)
    if not (moved or others):
        return None
    return CheckResult.of(
        ID,
        Status.WARN,
        f"in {path.parent}",
        finding="journal-damaged" if moved else "state-damaged",
        names=", ".join(p.name for p in [*moved, *others]),
    )
