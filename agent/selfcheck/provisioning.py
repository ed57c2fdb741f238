"""Provisioning: TID and MID present and well formed, a host configured, and the same as what the
TMS and the last sign-in say."""

from __future__ import annotations

from agent import messages
from agent.provisioning import ProvisioningError
from agent.selfcheck.base import CheckResult, Context, Status
from drivers.module import ModuleError

ID = "provisioning"


async def check(context: Context) -> CheckResult:
    config = context.config
    tid, mid = config.terminal.tid, config.terminal.mid
    missing = [name for name, value in (("TID", tid), ("MID", mid)) if not value]
    if missing or not config.endpoints:
        what = missing + ([] if config.endpoints else ["host.primary"])
        return CheckResult.of(
            ID,
            Status.FAIL,
            f"configuration {config.source}",
            finding="unprovisioned",
            missing=messages.listing(what),
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
                return CheckResult.of(
                    ID,
                    Status.FAIL,
                    f"module serial {serial.strip()}; TMS {config.tms.url}",
                    finding="differs-from-tms",
                    data={"tms": record.to_record()},
                    differences="; ".join(differences),
                )
            detail.append(f"TMS {config.tms.url} agrees (module serial {serial.strip()})")

    last = await context.last_signin()
    if last and last["tid"] and (last["tid"], last["mid"]) != (tid, mid):
        return CheckResult.of(
            ID,
            Status.WARN,
            "; ".join(detail),
            finding="changed-since-signin",
            tid=tid,
            mid=mid,
            hosts=hosts,
            signed_tid=last["tid"],
            signed_mid=last["mid"],
        )
    return CheckResult.of(ID, Status.OK, "; ".join(detail), tid=tid, mid=mid, hosts=hosts)
