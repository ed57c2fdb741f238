"""Storage: the journal can be written, the disk has room, and no reversal is stuck."""

from __future__ import annotations

import os

from agent import damaged, paths
from agent.journal import PATIENCE, JournalError
from agent.selfcheck.base import CheckResult, Context, Status, Text

ID = "storage"
LOW_SPACE, NO_SPACE = 50 * 2**20, 5 * 2**20


async def check(context: Context) -> CheckResult:
    path = paths.journal_path(context.config)
    journal = context.journal
    free_up = Text(
        f"free space on the disk holding {path.parent}", f"清理 {path.parent} 所在磁盘的空间"
    )
    if journal is None and not path.exists():
        return CheckResult(
            ID,
            Status.WARN,
            Text(
                "no journal yet: the service creates it when it first starts",
                "尚无交易日志：服务首次启动时创建",
            ),
            str(path),
            Text(
                "start the service: systemctl start pos-agent",
                "启动服务：systemctl start pos-agent",
            ),
            finding="journal-absent",
        )
    if journal is None:
        return CheckResult(
            ID,
            Status.FAIL,
            Text(
                f"the journal cannot be opened: {context.journal_error}",
                f"交易日志无法打开：{context.journal_error}",
            ),
            str(path),
            free_up,
            finding="journal-unusable",
        )
    try:
        if not journal.read_only:  # a technician's look writes nothing: the service will
            await journal.within(PATIENCE, journal.remember, "write-probe", str(context.now()))
    except JournalError as exc:
        return CheckResult(
            ID,
            Status.FAIL,
            Text(f"the journal cannot be written: {exc}", "交易日志无法写入"),
            f"{path}: {exc}",
            free_up,
            finding="journal-unwritable",
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
        return CheckResult(
            ID,
            Status.FAIL,
            Text(f"disk almost full: {mib} MiB free", f"磁盘将满：剩余 {mib} MiB"),
            detail,
            free_up,
            finding="disk-full",
        )
    if stuck:
        stans = [r.message.text(11) for r in stuck]
        return CheckResult(
            ID,
            Status.WARN,
            Text(
                f"{len(stuck)} reversal(s) unconfirmed after {limit} tries "
                f"(STAN {', '.join(stans)})",
                f"{len(stuck)} 笔冲正经 {limit} 次尝试仍未确认（流水号 {'、'.join(stans)}）",
            ),
            detail,
            Text(
                "check the network; the agent keeps sending them", "检查网络；本程序会继续发送冲正"
            ),
            finding="reversals-stuck",
        )
    moved = damaged.copies(path)
    others = [*damaged.copies(paths.provisioning_path(context.config)),
              *damaged.copies(paths.parameters_path(context.config))]  # fmt: skip
    if moved or others:
        names = ", ".join(p.name for p in [*moved, *others])
        return CheckResult(
            ID,
            Status.WARN,
            Text(
                f"damaged state set aside: {names}; the agent runs on fresh files",
                f"损坏的状态文件已移开：{names}；本程序已使用新文件运行",
            ),
            f"{detail}; in {path.parent}",
            Text(
                "settle the reversals of the damaged journal with the acquirer, then move the "
                "file(s) away",
                "与收单机构核对损坏日志中的冲正后，将这些文件移走",
            ),
            finding="journal-damaged" if moved else "state-damaged",
        )
    if free < LOW_SPACE:
        return CheckResult(
            ID,
            Status.WARN,
            Text(f"disk space low: {mib} MiB free", f"磁盘空间不足：剩余 {mib} MiB"),
            detail,
            free_up,
            finding="disk-low",
        )
    waiting = f"; {len(queued)} reversal(s) waiting to be sent" if queued else ""
    waiting_zh = f"；{len(queued)} 笔冲正待发送" if queued else ""
    if journal.read_only:
        state, state_zh = (
            "journal readable (not written: no service runs)",
            "交易日志可读（未写入：服务未运行）",
        )
        if journal.unseen_changes:
            detail += "; changes in the -wal file are not seen until the service starts"
    else:
        state, state_zh = "journal writable", "交易日志可写"
    return CheckResult(
        ID,
        Status.OK,
        Text(
            f"{state}, {free / 2**20:.0f} MiB free{waiting}",
            f"{state_zh}，剩余 {free / 2**20:.0f} MiB{waiting_zh}",
        ),
        detail,
    )
