"""Keys: the module answers, the TMK is in the configured slot, the PIK and MAK are there with the
KCVs of the last successful sign-in, and a MAC computed two ways agrees, with the slot's family's
algorithms (DES: 0x01 and 0x81; SM4: 0x03 and 0x83, DESIGN.md section 18)."""

from __future__ import annotations

from agent.keys.family import rules_of
from agent.keys.tmk_download import tmk_absent_remedy
from agent.selfcheck.base import CheckResult, Context, Status, Text, signin_scheme
from agent.selfcheck.module import failure
from agent.wire.mac import mac_block
from drivers.module import ModuleError

ID = "keys"

SIGN_IN = Text("sign in again: `agent signin`", "重新签到：`agent signin`")
# A fixed MAB for the self-test: the module MACs it whole (0x01/0x03) and from our R (0x81/0x83).
TEST_MAB = b"\x02\x00" + bytes(range(30))


async def check(context: Context) -> CheckResult:
    slot = context.config.module.key_slot
    if context.module is None:
        return CheckResult(ID, Status.SKIP, Text("no card module", "无加密模块"))
    try:
        status = await context.module_call(context.module.key_status, slot)
    except ModuleError as exc:
        return failure(ID, context.config.module.url, exc)
    family = rules_of(status.family)
    present = {name: state for name, state in status.keys.items() if state.present}
    detail = ", ".join(f"{name} KCV {state.kcv_hex}" for name, state in present.items())
    detail = f"slot {slot} ({family.name}): {detail or 'no keys'}"
    if "TMK" not in present:
        return CheckResult(
            ID,
            Status.FAIL,
            Text(f"no master key (TMK) in slot {slot}", f"密钥槽 {slot} 中没有主密钥（TMK）"),
            detail,
            await tmk_absent_remedy(context),  # the agent's to fix where a download is set
            finding="tmk-absent",
        )
    absent = [name for name in ("PIK", "MAK") if name not in present]
    if absent:
        return CheckResult(
            ID,
            Status.FAIL,
            Text(
                f"no working keys: {', '.join(absent)} absent",
                f"工作密钥缺失：{'、'.join(absent)}",
            ),
            detail,
            SIGN_IN,
            finding="keys-absent",
        )
    last = await context.last_signin()
    if last is None:
        return CheckResult(
            ID,
            Status.WARN,
            Text("working keys present but no sign-in is on record", "有工作密钥但无签到记录"),
            detail,
            SIGN_IN,
            finding="never-signed-in",
        )
    scheme, data = signin_scheme(last)
    data = {**data, "family": family.name}
    detail = f"{detail}; {scheme}"
    differing = [
        f"{name} {present[name].kcv_hex} (sign-in: {kcv})"
        for name, kcv in last["kcvs"].items()
        if name in present and present[name].kcv_hex != kcv
    ]
    if differing:
        return CheckResult(
            ID,
            Status.FAIL,
            Text(
                "the module's keys are not those of the last sign-in: " + ", ".join(differing),
                "模块中的密钥与上次签到不符：" + "、".join(differing),
            ),
            detail,
            SIGN_IN,
            finding="kcv-mismatch",
            data=data,
        )
    try:
        whole = await context.module_call(context.module.mac, slot, family.mac_whole, TEST_MAB)
        r = mac_block(TEST_MAB, family.mac_block)
        from_r = await context.module_call(context.module.mac_from_block, r, slot)
    except ModuleError as exc:
        return CheckResult(
            ID,
            Status.FAIL,
            Text(f"the MAC self-test failed: {exc}", "MAC 自检失败"),
            f"{detail}; {exc}",
            SIGN_IN,
            finding="mac-selftest",
            data=data,
        )
    if whole != from_r:
        return CheckResult(
            ID,
            Status.FAIL,
            Text(
                "the module's MAC over the message differs from its MAC over our XOR block",
                "模块对整段报文和对异或块计算的 MAC 不一致",
            ),
            f"{detail}; MAC 0x{family.mac_whole:02X} {whole.hex().upper()}, from R "
            f"{from_r.hex().upper()}",
            Text("report the module to the vendor", "请将模块报修"),
            finding="mac-selftest",
            data=data,
        )
    return CheckResult(
        ID,
        Status.OK,
        Text(
            f"{family.name} keys: TMK, PIK and MAK present; KCVs match the last sign-in; MAC "
            "self-test passed",
            f"{family.name} 密钥：TMK、PIK、MAK 齐全；校验值与上次签到一致；MAC 自检通过",
        ),
        detail,
        data=data,
    )
