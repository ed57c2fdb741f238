"""An SM4 terminal end to end (issue 23): the module simulator's SM4 slot (1) against the host
simulator over real TCP, the module on a real pty, the app on the agent's sockets. The slot's
family decides the sign-in scheme (006), the layout (8), the MAC (SM4 on 16-byte blocks) and the
PIN block (59 usage A1, or 62); the host verifies each with its own SM4 keys (DESIGN.md
sections 4 and 18). The DES terminal (slot 0) stays as it was."""

import asyncio
import logging

import pytest

from agent.selfcheck import run_checks
from agent.selfcheck.base import Status
from agent.sim.host import TEST_TMK
from agent.sim.module import SM4_SLOT, TEST_SM4_TMK, TEST_TUSN_KEY
from agent.wire import field59
from agent.wire.frame import Layout, decode_frame
from agent.wire.message import Message
from drivers.module import KeyFamily
from tests.integration.gateway_rig import TID, app_purchase, exchange, gateway_rig, pin_purchase
from tests.integration.test_selftest import context_of

SM4 = {"module": {"key_slot": SM4_SLOT}}


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_an_sm4_terminal_signs_in_with_006_and_its_purchase_is_approved(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections=SM4) as rig:  # key_scheme "auto"
            state = rig.host.state()
            assert state["signin_schemes"] == ["006"]  # the family's only scheme, first
            assert state["sessions"][TID] == {"scheme": "006", "layout": 8}
            assert (await rig.agent.sender.macs.families.read(SM4_SLOT)).family is KeyFamily.SM4
            [signed] = [e for e in rig.agent.journal.events() if e["kind"] == "signed-in"]
            assert signed["layout"] == 8
            response = await exchange(rig.socket, app_purchase(1234))
            # the host verified the request's SM4 MAC (A0 otherwise), the agent the answer's
            assert response.text(39) == "00", response
            assert rig.host.state()["mac_failures"] == 0

    run(scenario())


def _requests_seen(rig) -> list[Message]:
    """The requests the host receives from now on, decoded as it decodes them."""
    seen: list[Message] = []
    handle = rig.host.handle

    def recording(frame: bytes) -> bytes | None:
        seen.append(decode_frame(frame, Layout.TPDU).message)
        return handle(frame)

    rig.host.handle = recording
    return seen


@pytest.mark.parametrize("pin_field", ["59", "62"])
def test_an_sm4_pin_purchase_is_approved_with_the_pin_verified(tmp_path, pin_field) -> None:
    async def scenario():
        sections = {**SM4, "wire": {"sm_pin_field": pin_field}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            request = await pin_purchase(rig, 1000)
            block = field59.find_usage(request.fields[59], field59.SM4_PIN_BLOCK)
            assert block is not None and len(block) == 16
            assert (request.fields[52], request.text(53)) == (bytes(8), "23" + "0" * 14)
            seen = _requests_seen(rig)
            response = await exchange(rig.socket, request)
            assert response.text(39) == "00", response
            state = rig.host.state()
            assert (state["pins_verified"], state["pin_failures"]) == (1, 0)
            assert state["mac_failures"] == 0
            [sent] = [m for m in seen if m.mti == "0200"]
            in_59 = field59.find_usage(sent.fields[59], field59.SM4_PIN_BLOCK)
            if pin_field == "62":  # moved: 59 keeps the rest (A2 the agent added)
                assert (in_59, sent.fields[62]) == (None, block)
                assert field59.TUSN_USAGE in field59.Field59.parse(sent.fields[59]).tags
            else:  # forwarded as the app built it
                assert in_59 == block and 62 not in sent

    run(scenario())


def test_a_wrong_sm4_mac_on_an_answer_is_a0_and_a_reversal(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections=SM4) as rig:
            rig.server.faults.add("wrong-mac")
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "A0"
            assert [r.reason for r in rig.agent.journal.queued_reversals()] == ["A0"]
            assert await rig.agent.reversals.send() == 1  # the 0400 carries a good SM4 MAC
            [purchase] = rig.host.state()["purchases"].values()
            assert purchase["reversed"]
            assert rig.host.state()["mac_failures"] == 0

    run(scenario())


@pytest.mark.parametrize(("slot", "family"), [(0, "DES"), (SM4_SLOT, "SM4")])
def test_the_self_check_reports_the_family_and_passes_its_mac_self_test(
    tmp_path, slot, family
) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"module": {"key_slot": slot}}) as rig:
            check = (await run_checks(context_of(rig), ["keys"])).get("keys")
            assert (check.status, check.finding) == (Status.OK, "ok"), check
            assert check.data["family"] == family
            assert check.summary.en.startswith(f"{family} keys:")
            assert f"slot {slot} ({family})" in check.detail

    run(scenario())


def test_the_des_terminal_is_unchanged(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            assert rig.host.state()["signin_schemes"] == ["003"]
            assert rig.host.state()["sessions"][TID] == {"scheme": "003", "layout": 2}
            response = await exchange(rig.socket, await pin_purchase(rig, 1000))
            assert response.text(39) == "00", response
            state = rig.host.state()
            assert (state["pins_verified"], state["mac_failures"]) == (1, 0)

    run(scenario())


def _forms(key: bytes) -> tuple[str, ...]:
    return (key.hex().upper(), key.hex())


def test_no_clear_sm4_key_or_pin_block_in_logs_journal_or_events(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario():
        sections = {**SM4, "wire": {"sm_pin_field": "62"}}
        async with gateway_rig(tmp_path, sections=sections) as rig:

            def issued() -> list[bytes]:  # the clear working keys of the host's sessions
                return [
                    key for session in rig.host.sessions.values() for key in session.keys.values()
                ]

            keys = issued()
            pin_request = await pin_purchase(rig, 1000)
            await exchange(rig.socket, pin_request)
            await exchange(rig.socket, app_purchase(1001))
            rig.server.faults.add("wrong-mac")
            await exchange(rig.socket, app_purchase(1002))
            await rig.agent.reversals.send()
            await rig.agent.sender.sign_in()  # a second session: its keys are secrets too
            keys += issued()
            journal = rig.agent.journal
            rows = repr(journal.transactions()) + repr(journal.events())
            block = field59.find_usage(pin_request.fields[59], field59.SM4_PIN_BLOCK)
            return keys, rows, block

    issued, rows, block = run(scenario())
    assert len(set(issued)) == 6  # PIK, MAK and TDK of each session
    journal = b"".join(p.read_bytes() for p in tmp_path.glob("journal.sqlite3*"))
    secrets = {TEST_TMK, TEST_SM4_TMK, TEST_TUSN_KEY, *issued, block}
    for secret in secrets:
        for text in _forms(secret):
            assert text not in caplog.text
            assert text not in rows
            assert text.encode() not in journal
        assert secret not in journal


def test_a_gm_terminal_downloads_the_sm2_ca_keys_beside_the_others(tmp_path) -> None:
    """DESIGN.md section 16: "国密 CA keys (SM2) the same way with 0820/373 and 0800/373". The
    host's requirement 4 on an SM4 terminal brings both chains (ended by 0800/371 each), each
    key checked by the hash its DF06 names (SM3 for the SM2 keys), a bad one refused alone; a
    DES terminal asks for none of the SM2 ones."""

    async def scenario():
        async with gateway_rig(tmp_path, sections=SM4) as rig:
            rig.host.downloads.set_fault("ca-sha1")  # RSA key 02 and SM2 key 12: DF03 wrong
            await rig.agent.host_requests.run(4)
            stored = rig.agent.downloads.store.read()
            assert [k["index"] for k in stored["ca_keys"]["keys"]] == ["01", "03"]
            sm2 = stored["sm2_ca_keys"]["keys"]
            assert [k["index"] for k in sm2] == ["11", "13"]
            assert {k["tags"]["DF07"] for k in sm2} == {"04"}  # SM2
            requests = rig.host.downloads.requests
            assert (requests["373"], requests["371"]) == (5, 2)  # two list parts, three keys
            refused = [e["reason"] for e in rig.agent.journal.events()
                       if e["kind"] == "ca-key-refused"]  # fmt: skip
            assert any("A000000333/12" in r and "is not its SM3" in r for r in refused)

    run(scenario())

    async def des_terminal():
        async with gateway_rig(tmp_path / "des") as rig:
            await rig.agent.host_requests.run(4)
            assert "sm2_ca_keys" not in rig.agent.downloads.store.read()
            assert "373" not in rig.host.downloads.requests

    (tmp_path / "des").mkdir()
    run(des_terminal())


def test_the_apps_own_sm2_ca_key_chain_is_kept(tmp_path) -> None:
    """The payment app runs the 国密 chain itself through the agent: the agent keeps the SM2
    keys it brought at the chain's end (0800/371), apart from the other CA keys."""
    from agent.session.tlv import encode_all

    def step(mti: str, code: str, stan: int, field62: bytes | None = None) -> Message:
        fields: dict[int, str | bytes] = {11: f"{stan:06d}", 60: f"00000000{code}"}
        if field62 is not None:
            fields[62] = field62
        return Message(mti, fields)

    async def scenario():
        async with gateway_rig(tmp_path, sections=SM4) as rig:
            listing = await exchange(rig.socket, step("0820", "373", 80, b"100"))
            assert listing.binary(62)[:1] == b"2"  # more parts: the app asks one key only
            key = encode_all([("9F06", bytes.fromhex("A000000333")), ("9F22", b"\x11")])
            assert (await exchange(rig.socket, step("0800", "373", 81, key))).text(39) == "00"
            assert (await exchange(rig.socket, step("0800", "371", 82))).text(39) == "00"
            stored = rig.agent.downloads.store.read()
            assert [k["index"] for k in stored["sm2_ca_keys"]["keys"]] == ["11"]
            assert "ca_keys" not in stored
            # an RSA chain the app abandoned after one key, then a whole SM2 chain: its end
            # (0800/371) commits the SM2 one only, the abandoned one replaces nothing
            await rig.agent.host_requests.run(4)
            in_use = rig.agent.downloads.store.read()["ca_keys"]["keys"]
            assert (await exchange(rig.socket, step("0820", "372", 83, b"100"))).text(39) == "00"
            rsa = encode_all([("9F06", bytes.fromhex("A000000333")), ("9F22", b"\x01")])
            assert (await exchange(rig.socket, step("0800", "370", 84, rsa))).text(39) == "00"
            for stan, (mti, code, field62) in enumerate(
                [("0820", "373", b"100"), ("0800", "373", key), ("0800", "371", None)], start=85
            ):
                assert (await exchange(rig.socket, step(mti, code, stan, field62))).text(39) == "00"
            stored = rig.agent.downloads.store.read()
            assert stored["ca_keys"]["keys"] == in_use
            assert [k["index"] for k in stored["sm2_ca_keys"]["keys"]] == ["11"]

    run(scenario())


def test_a_host_without_sm2_ca_keys_leaves_requirement_4_met_by_the_others(tmp_path) -> None:
    """A host that refuses 0820/373 (no 国密 CA keys): the CA keys are in and requirement 4 is
    met, the SM2 chain's failure journalled; not every answer carrying 4 fetching them all
    again."""

    async def scenario():
        async with gateway_rig(tmp_path, sections=SM4) as rig:
            rig.host.downloads.set_fault("refuse")
            rig.host.downloads.fault_codes = {"373"}
            assert await rig.agent.host_requests.run(4)  # met
            stored = rig.agent.downloads.store.read()
            assert "ca_keys" in stored and "sm2_ca_keys" not in stored
            [failed] = [e for e in rig.agent.journal.events() if e["kind"] == "download-failed"]
            assert failed["chain"] == "sm2_ca_keys"
            assert "the host answered 96 to 0820/373" in failed["reason"]

    run(scenario())
