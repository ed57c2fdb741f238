"""Session downloads (DESIGN.md section 16) against the host simulator over real TCP: driven by the
header's processing requirement and by the payment app's own requests; hostile answers refused
with the data in use kept."""

import asyncio
import json

import pytest

from agent.session.downloads import MAX_PARTS
from agent.session.tlv import encode_all
from agent.sim.host import TEST_TERMINAL
from agent.wire.message import Message
from tests.integration.gateway_rig import TID, app_purchase, exchange, gateway_rig
from tests.integration.test_recovery import recording_hook

FAST_RETRIES = {"session": {"retry_first": 0.01, "retry_max": 0.05, "attempts": 2}}


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


async def host_asks(rig, requirement: int) -> None:
    """The host puts ``requirement`` in the header of its answer to a purchase; the agent acts
    on it in the background, after the approval has gone to the app."""
    rig.host.terminals[TID].asks = requirement
    assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
    await rig.agent.host_requests.idle()
    await rig.agent.hooks.told()


def stored(rig) -> dict:
    return rig.agent.downloads.store.read()


def events(rig, kind: str) -> list[dict]:
    return [e for e in rig.agent.journal.events() if e["kind"] == kind]


def test_terminal_parameters_with_the_merchant_name_and_the_hook(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            hook = recording_hook(tmp_path, "parameters-downloaded")
            await host_asks(rig, 1)
            terminal = stored(rig)["terminal"]
            assert terminal["values"]["merchant_name"] == "测试商户银联商务有限公司"
            assert terminal["values"]["timeout_seconds"] == "60"
            assert terminal["unparsed"] is None and terminal["raw"]
            [payload] = [json.loads(line) for line in hook.read_text().splitlines() if line]
            assert (payload["section"], payload["tid"]) == ("terminal", TID)
            assert events(rig, "parameters-downloaded")[0]["section"] == "terminal"
            # every step was journalled as a transaction of its own
            assert any(t["mti"] == "0800" for t in rig.agent.journal.transactions())

    run(scenario())


def test_a_satisfied_requirement_is_not_acted_on_again(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            for _ in range(3):  # the host keeps asking
                await host_asks(rig, 1)
            assert rig.host.downloads.requests["360"] == 1

    run(scenario())


def test_status_upload_names_the_devices_and_the_parameters_in_use(tmp_path) -> None:
    """The exact bytes under each acquirer's table: tests/integration/test_status_upload.py."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            await host_asks(rig, 1)
            await host_asks(rig, 2)
            [upload] = rig.host.downloads.status_uploads
            sent = bytes.fromhex(upload)
            assert sent == b"011021031041051" + bytes.fromhex(stored(rig)["terminal"]["raw"])
            assert rig.host.downloads.status_refusals == []

    run(scenario())


def test_ca_keys_in_two_parts_checked_and_kept(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            await host_asks(rig, 4)
            keys = stored(rig)["ca_keys"]["keys"]
            assert [(k["rid"], k["index"]) for k in keys] == [
                ("A000000333", "01"),
                ("A000000333", "02"),
                ("A000000333", "03"),
            ]
            requests = rig.host.downloads.requests
            assert (requests["372"], requests["370"], requests["371"]) == (2, 3, 1)

    run(scenario())


def test_download_answers_that_echo_no_stan_still_complete_the_chains(tmp_path) -> None:
    """A host that answers each step with only the fields DESIGN.md section 16 lists for it
    (0800/360: 41, 42, 60): its 0810s and 0830s carry no field 11."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            for mti in ("0800", "0820"):
                rig.server.faults.add("no-stan", count=20, mti=mti)
            await host_asks(rig, 1)
            await host_asks(rig, 4)
            assert stored(rig)["terminal"]["values"]["timeout_seconds"] == "60"
            assert len(stored(rig)["ca_keys"]["keys"]) == 3
            assert "no-stan" in rig.server.faults.pending()  # not every one was needed
            assert rig.agent.link.late_responses == 0

    run(scenario())


def test_a_ca_key_whose_sha1_is_wrong_is_refused_alone(tmp_path) -> None:
    """DESIGN.md section 16: that key alone is refused (journalled), the good ones are kept,
    and the chain still ends with 0800/371, so the host stops asking."""

    async def scenario():
        sections = {"session": {**FAST_RETRIES["session"], "repeat_after": 0}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            rig.host.downloads.set_fault("ca-sha1")
            await host_asks(rig, 4)
            keys = stored(rig)["ca_keys"]["keys"]
            assert [(k["rid"], k["index"]) for k in keys] == [
                ("A000000333", "01"),
                ("A000000333", "03"),
            ]
            [refused] = events(rig, "ca-key-refused")
            assert refused["key"] == "A000000333/02" and "is not its SHA-1" in refused["reason"]
            assert rig.host.downloads.requests["371"] == 1  # the chain ended
            assert events(rig, "host-asks-failed") == []

    run(scenario())


def test_hostile_lists_fail_the_chain_and_never_block_sales(tmp_path) -> None:
    async def scenario():
        sections = {"session": {**FAST_RETRIES["session"], "repeat_after": 0}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            rig.host.downloads.set_fault("tlv-overrun")
            await host_asks(rig, 5)
            assert "ic_parameters" not in stored(rig)
            reason = events(rig, "host-asks-failed")[0]["reason"]
            assert reason == "0820/382: tag 9F06 at offset 22: bad length form 0x81"
            rig.host.downloads.set_fault("list-never-ends")
            await host_asks(rig, 4)
            assert (
                f"did not end after {MAX_PARTS} answers"
                in (events(rig, "host-asks-failed")[-1]["reason"])
            )
            rig.host.downloads.set_fault("list-repeats")  # the first part, again and again
            await host_asks(rig, 4)
            reason = events(rig, "host-asks-failed")[-1]["reason"]
            assert reason == (
                "0820/372: the part from entry 1 repeats entries listed already (the host "
                "ignores the start index)"
            )
            assert "ca_keys" not in stored(rig)
            assert (await exchange(rig.socket, app_purchase(2000))).text(39) == "00"

    run(scenario())


def test_ic_and_contactless_parameters(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            await host_asks(rig, 5)
            await host_asks(rig, 9)
            data = stored(rig)
            assert [a["aid"] for a in data["ic_parameters"]["aids"]] == [
                "A000000333010101",
                "A000000333010102",
            ]
            assert data["ic_parameters"]["aids"][0]["tags"]["9F1B"] == "00000000"
            assert sorted(data["contactless"]["tags"]) == [
                f"FF80{n:02X}" for n in range(0x54, 0x5E)
            ]

    run(scenario())


def test_a_failed_download_is_retried_with_back_off(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.3, sections=FAST_RETRIES) as rig:
            rig.server.faults.add("no-answer", count=1)  # the first 0800/394 times out
            await rig.agent.host_requests.run(9)
            assert "contactless" in stored(rig)
            assert rig.host.downloads.requests["394"] == 2
            assert not events(rig, "host-asks-failed")

    run(scenario())


def test_the_apps_own_downloads_go_to_the_host_whole_and_are_kept(tmp_path) -> None:
    def request(mti: str, code: str, field62: bytes | None = None, stan: int = 1) -> Message:
        fields = {11: f"{stan:06d}", 60: f"00000000{code}"}
        if field62 is not None:
            fields[62] = field62
        return Message(mti, dict(sorted(fields.items())))

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            answer = await exchange(rig.socket, request("0800", "360", stan=41))
            assert (answer.mti, answer.text(39), answer.text(11)) == ("0810", "00", "000041")
            assert 62 in answer  # the app gets the parameters it asked for
            assert stored(rig)["terminal"]["values"]["merchant_name"].startswith("测试商户")
            # the app runs the CA key chain itself: the agent keeps the keys at its end
            listing = await exchange(rig.socket, request("0820", "372", b"100", stan=42))
            assert listing.binary(62)[:1] == b"2"
            rid_index = encode_all([("9F06", bytes.fromhex("A000000333")), ("9F22", b"\x02")])
            key = await exchange(rig.socket, request("0800", "370", rid_index, stan=43))
            assert key.text(39) == "00"
            assert "ca_keys" not in stored(rig)  # not before the chain has ended
            await exchange(rig.socket, request("0800", "371", stan=44))
            [kept] = stored(rig)["ca_keys"]["keys"]
            assert (kept["rid"], kept["index"]) == ("A000000333", "02")
            assert TEST_TERMINAL["tid"] == TID

    run(scenario())


def test_a_ca_key_of_the_apps_own_chain_whose_sha1_is_wrong_is_refused_alone(tmp_path) -> None:
    """Section 16 for the app's own chain too: the key whose DF03 is wrong is refused alone
    (journalled), the keys fetched before and after it are kept at the chain's end."""

    def key_request(index: int, stan: int) -> Message:
        rid_index = encode_all([("9F06", bytes.fromhex("A000000333")), ("9F22", bytes([index]))])
        return Message("0800", {11: f"{stan:06d}", 60: "00000000370", 62: rid_index})

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.host.downloads.set_fault("ca-sha1")
            for stan, index in enumerate((1, 2, 3), start=50):
                assert (await exchange(rig.socket, key_request(index, stan))).text(39) == "00"
            end = Message("0800", {11: "000060", 60: "00000000371"})
            assert (await exchange(rig.socket, end)).text(39) == "00"
            keys = stored(rig)["ca_keys"]["keys"]
            assert [(k["rid"], k["index"]) for k in keys] == [
                ("A000000333", "01"),
                ("A000000333", "03"),
            ]
            [refused] = events(rig, "download-refused")
            assert refused["by"] == "app" and "is not its SHA-1" in refused["reason"]

    run(scenario())


def test_an_apps_chain_that_kept_nothing_leaves_the_keys_in_use(tmp_path) -> None:
    """The app's chain whose only key is refused (its DF03 wrong), and a chain's end whose steps
    the agent never saw (it started meanwhile): neither replaces the CA keys in use with none
    (section 16: a bad key is refused alone, the data in use replaced by a completed chain)."""

    def step(code: str, stan: int, field62: bytes | None = None) -> Message:
        fields: dict[int, str | bytes] = {11: f"{stan:06d}", 60: f"00000000{code}"}
        if field62 is not None:
            fields[62] = field62
        return Message("0800", fields)

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            await host_asks(rig, 4)  # the agent's own chain: the host's keys
            in_use = stored(rig)["ca_keys"]["keys"]
            assert in_use
            rig.host.downloads.set_fault("ca-sha1")  # key 02's DF03 is wrong
            key_2 = encode_all([("9F06", bytes.fromhex("A000000333")), ("9F22", b"\x02")])
            assert (await exchange(rig.socket, step("370", 70, key_2))).text(39) == "00"
            assert (await exchange(rig.socket, step("371", 71))).text(39) == "00"
            assert stored(rig)["ca_keys"]["keys"] == in_use
            assert (await exchange(rig.socket, step("371", 72))).text(39) == "00"
            assert stored(rig)["ca_keys"]["keys"] == in_use
            kept = [e["reason"] for e in events(rig, "download-kept")]
            assert kept == ["1 refused", "no step of it seen"]

    run(scenario())


def test_parameters_requested_hook_for_acquirer_specific_requirements(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            hook = recording_hook(tmp_path, "parameters-requested")
            await host_asks(rig, 7)
            [payload] = [json.loads(line) for line in hook.read_text().splitlines() if line]
            assert (payload["requirement"], payload["what"]) == (7, "card BIN blacklist")

    run(scenario())


def test_agent_params_shows_what_was_downloaded(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    agent = Path(sys.executable).with_name("agent")
    config = tmp_path / "agent.toml"
    config.write_text(f'[journal]\npath = "{tmp_path / "journal.sqlite3"}"\n')

    def params(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(agent), "params", "--config", str(config), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert "no parameters downloaded yet" in params().stdout

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            for requirement in (1, 4, 5, 9):
                await host_asks(rig, requirement)

    run(scenario())
    shown = params()
    assert shown.returncode == 0, shown.stderr
    for text in (
        "merchant_name: 测试商户",
        "A000000333/02 expires 2030-12-31",
        "AID A000000333010101",
    ):
        assert text in shown.stdout
    data = json.loads(params("--json").stdout)
    assert sorted(data) == ["ca_keys", "contactless", "ic_parameters", "terminal"]
    # a host's text is shown, never obeyed (section 11): GB18030 decodes to C1 controls too
    hostile = "\u009b2J\u007f\u202eEVIL 商户"
    stored = {"terminal": {"at": 0, "values": {"merchant_name": hostile}}}
    (tmp_path / "parameters.json").write_text(json.dumps(stored))
    for shown in (params(), params("--json")):
        assert shown.returncode == 0
        assert not any(c in shown.stdout for c in "\u009b\u007f\u202e\x1b"), shown.stdout
    assert "merchant_name: \\x9b2J\\x7f\\u202eEVIL" in params().stdout
    assert json.loads(params("--json").stdout)["terminal"]["values"]["merchant_name"] == hostile
    (tmp_path / "parameters.json").write_text("[1, 2]")
    broken = params()
    assert broken.returncode == 1 and "are not a JSON object" in broken.stderr


@pytest.mark.parametrize(
    ("requirement", "step", "reason", "asked"),
    [
        # a cut 0810/360 is not refused: the rest is kept raw (test_status_upload.py)
        (4, "372", "0820/372: tag DF05 at offset 35 says 8 bytes, 7 are left", 2),
        # each CA key is refused alone: all three cut, the chain fails (keys in use stay)
        (4, "370", "0800/370: tag DF03 at offset 167 says 20 bytes, 19 are left", 6),
        (5, "380", "0800/380: tag 9F7B at offset 51 says 6 bytes, 5 are left", 2),
        (9, "394", "0800/394: tag FF805D at offset 90 says 6 bytes, 5 are left", 2),
    ],
)
def test_every_download_step_refuses_a_cut_answer(
    tmp_path, requirement, step, reason, asked
) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections=FAST_RETRIES) as rig:
            rig.host.downloads.set_fault("short-62")
            rig.host.downloads.fault_codes = {step}
            await rig.agent.host_requests.run(requirement)
            [failed] = events(rig, "host-asks-failed")
            assert failed["reason"] == reason
            assert stored(rig) == {}
            assert rig.host.downloads.requests[step] == asked  # tried again, then given up
            if step == "370":  # every key refused: each try still ended with its 0800/371
                assert rig.host.downloads.requests["371"] == 2

    run(scenario())


@pytest.mark.parametrize(
    ("requirement", "step"),
    [(1, "0800/360"), (2, "0820/362"), (4, "0820/372"), (5, "0820/382"), (9, "0800/394")],
)
def test_a_refused_step_fails_the_chain(tmp_path, requirement, step) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections=FAST_RETRIES) as rig:
            rig.host.downloads.set_fault("refuse")
            await rig.agent.host_requests.run(requirement)
            [failed] = events(rig, "host-asks-failed")
            assert failed["reason"] == f"the host answered 96 to {step}"
            assert (await exchange(rig.socket, app_purchase(3000))).text(39) == "00"

    run(scenario())


def test_a_list_of_480_ca_keys_in_40_parts_stops_at_the_bound(tmp_path, monkeypatch) -> None:
    """The issue's list: 40 parts of 12 keys. Listing stops once it holds the 100 keys a chain
    asks for at most (9 parts), those are asked, and the chain still ends with 0800/371."""
    from agent.session.downloads import MAX_ITEMS
    from agent.sim import host_downloads

    monkeypatch.setattr(host_downloads, "PAGE", 12)

    async def scenario():
        async with gateway_rig(tmp_path, sections=FAST_RETRIES) as rig:
            rids = [bytes.fromhex(f"A00000033{n}") for n in range(4)]
            rig.host.downloads.ca_keys = [
                host_downloads.sample_ca_key(index, rid) for rid in rids for index in range(1, 121)
            ]
            await rig.agent.host_requests.run(4)
            asked = rig.host.downloads.requests
            assert (asked["372"], asked["370"], asked["371"]) == (9, MAX_ITEMS, 1)
            assert len(stored(rig)["ca_keys"]["keys"]) == MAX_ITEMS

    run(scenario())
