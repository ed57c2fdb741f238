"""Keys: the module answers, the TMK is in the configured slot, the PIK and MAK are there with the
KCVs of the last successful sign-in, and a MAC computed two ways agrees, with the slot's family's
algorithms (DES: 0x01 and 0x81; SM4: 0x03 and 0x83, DESIGN.md section 18)."""

from __future__ import annotations

from agent import messages
from agent.keys.family import rules_of
from agent.keys.tmk_download import tmk_absent_remedy
from agent.selfcheck.base import CheckResult, Context, Status, signin_scheme
from agent.selfcheck.module import failure
from agent.wire.mac import mac_block
from drivers.module import ModuleError

ID = "keys"

# A fixed MAB for the self-test: the module MACs it whole (0x01/0x03) and from our R (0x81/0x83).
TEST_MAB = b"\x02\x00" + bytes(range(30))


async def check(context: Context) -> CheckResult:
    slot = context.config.module.key_slot
    if context.module is None:
        return CheckResult.of(ID, Status.SKIP)
    try:
        status = await context.module_call(context.module.key_status, slot)
    except ModuleError as exc:
        return failure(ID, context.config.module.url, exc)
    family = rules_of(status.family)
    present = {name: state for name, state in status.keys.items() if state.present}
    detail = ", ".join(f"{name} KCV {state.kcv_hex}" for name, state in present.items())
    detail = f"slot {slot} ({family.name}): {detail or 'no keys'}"
    if "TMK" not in present:
        return CheckResult.of(
            ID,
            Status.FAIL,
            detail,
            finding="tmk-absent",
            remedy=await tmk_absent_remedy(context),  # the agent's to fix where a download is set
            slot=slot,
        )
    absent = [name for name in ("PIK", "MAK") if name not in present]
    if absent:
        return CheckResult.of(
            ID, Status.FAIL, detail, finding="keys-absent", absent=messages.listing(absent)
        )
    last = await context.last_signin()
    if last is None:
        return CheckResult.of(ID, Status.WARN, detail, finding="never-signed-in")
    scheme, data = signin_scheme(last)
    data = {**data, "family": family.name}
    detail = f"{detail}; {scheme}"
    differing = [
        f"{name} {present[name].kcv_hex} (sign-in: {kcv})"
        for name, kcv in last["kcvs"].items()
        if name in present and present[name].kcv_hex != kcv
    ]
    if differing:
        return CheckResult.of(
            ID,
            Status.FAIL,
            detail,
            finding="kcv-mismatch",
            data=data,
            differing=messages.listing(differing),
        )
    try:
        whole = await context.module_call(context.module.mac, slot, family.mac_whole, TEST_MAB)
        r = mac_block(TEST_MAB, family.mac_block)
        from_r = await context.module_call(context.module.mac_from_block, r, slot)
    except ModuleError as exc:
        return CheckResult.of(
            ID, Status.FAIL, f"{detail}; {exc}", finding="mac-selftest", data=data, error=str(exc)
        )
    if whole != from_r:
        macs = f"MAC 0x{family.mac_whole:02X} {whole.hex().upper()}, from R {from_r.hex().upper()}"
        return CheckResult.of(
            ID,
            Status.FAIL,
            f"{detail}; {macs}",
            finding="mac-selftest",
            variant="macs-differ",
            data=data,
        )
    return CheckResult.of(ID, Status.OK, detail, data=data, family=family.name)
