"""Provisioning: TID and MID present and well formed, a host configured, and the same as what the
TMS and the last sign-in say."""

from __future__ import annotations

from agent.provisioning import ProvisioningError
from agent.selfcheck.base import CheckResult, Context, Status, Text
from drivers.module import ModuleError

ID = "provisioning"

HOW_TO_PROVISION = Text(
    "run `agent provision` (asks the TMS), or set terminal.tid, terminal.mid and host.primary "
    "in /etc/pos-agent/agent.toml",
    "运行 `agent provision`（从 TMS 下载参数），或在 /etc/pos-agent/agent.toml 中设置 "
    "terminal.tid、terminal.mid 和 host.primary",
)


async def check(context: Context) -> CheckResult:
    config = context.config
    tid, mid = config.terminal.tid, config.terminal.mid
    missing = [name for name, value in (("TID", tid), ("MID", mid)) if not value]
    if missing or not config.endpoints:
        what = missing + ([] if config.endpoints else ["host.primary"])
        return CheckResult(
            ID,
            Status.FAIL,
            Text(
                f"not provisioned: {', '.join(what)} missing",
                f"未配置终端参数：缺少 {'、'.join(what)}",
            ),
            f"configuration {config.source}",
            HOW_TO_PROVISION,
            finding="unprovisioned",
        )
    hosts = ", ".join(map(str, config.endpoints))
    said = f"TID {tid}, MID {mid}, host {hosts}"
    detail = [said, f"TPDU NII {config.wire.tpdu_destination:04X}/{config.wire.tpdu_source:04X}"]

    if config.tms.url and context.module is not None:
        try:
            serial = (await context.module_info()).serial
            record = await context.tms_record()
        except (ProvisioningError, ModuleError) as exc:
            detail.append(f"TMS not consulted: {exc}")
        else:
            differences = [
                f"{name} {ours!r} here, {theirs!r} at the TMS"
                for name, ours, theirs in (
                    ("TID", tid, record.tid),
                    ("MID", mid, record.mid),
                    ("hosts", [str(e) for e in config.endpoints], list(record.hosts)),
                )
                if theirs and ours != theirs
            ]
            if differences:
                return CheckResult(
                    ID,
                    Status.FAIL,
                    Text(
                        "the configuration differs from the TMS: " + "; ".join(differences),
                        "终端参数与 TMS 不一致：" + "; ".join(differences),
                    ),
                    f"module serial {serial.strip()}; TMS {config.tms.url}",
                    Text(
                        "re-provision from the TMS: `agent provision`",
                        "从 TMS 重新下载参数：`agent provision`",
                    ),
                    finding="differs-from-tms",
                    data={"tms": record.to_record()},
                )
            detail.append(f"TMS {config.tms.url} agrees (module serial {serial.strip()})")

    last = await context.last_signin()
    if last and last["tid"] and (last["tid"], last["mid"]) != (tid, mid):
        return CheckResult(
            ID,
            Status.WARN,
            Text(
                f"{said}; the last sign-in was as TID {last['tid']}, MID {last['mid']}",
                f"{said}；上次签到使用的是 TID {last['tid']}、MID {last['mid']}",
            ),
            "; ".join(detail),
            Text("sign in again: `agent signin`", "重新签到：`agent signin`"),
            finding="changed-since-signin",
        )
    return CheckResult(
        ID, Status.OK, Text(said, f"终端号 {tid}，商户号 {mid}，主机 {hosts}"), "; ".join(detail)
    )
