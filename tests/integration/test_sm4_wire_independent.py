"""An SM4 session checked on the wire by a second SM4 (gmssl, `tests/independent_sm4.py`), as an
independent acquirer would check it (issue 23): nothing here uses the project's SM4, MAC or PIN
code. The sign-in's layout 8 keys are decrypted under the documented SM4 TMK of slot 1 and their
KCVs checked; every request and answer MAC is recomputed over the bytes that crossed the socket;
the PIN block in 59 ``A1`` is decrypted under the PIK and read as format 0 + 8 x ``FF``; the TUSN
ciphertext of 59 ``A2`` is recomputed under the documented TUSN key (DESIGN.md sections 4, 5,
17 and 18). The project's decoder only finds the fields."""

import asyncio

from agent.sim.module import SM4_SLOT
from agent.wire.frame import Layout, decode_frame
from tests import independent_sm4
from tests.integration.gateway_rig import PAN, app_purchase, exchange, gateway_rig, pin_purchase

# DESIGN.md section 5's documented test keys, written out rather than imported
SLOT_1_TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TUSN_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
PIN = "123456"
PREFIX = 11  # TPDU 5 + header 6 before the MTI
MAC_BYTES = 8


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def usages(data: bytes, tag_bytes: int = 2) -> dict[str, bytes]:
    """Field 59's usages (or ``A2``'s sub-usages): tag, 3 ASCII digits of length, value."""
    found: dict[str, bytes] = {}
    at = 0
    while at < len(data):
        tag = data[at : at + tag_bytes].decode("ascii")
        length = int(data[at + tag_bytes : at + tag_bytes + 3])
        start = at + tag_bytes + 3
        found[tag] = data[start : start + length]
        at = start + length
    assert at == len(data)
    return found


def layout_8_keys(field62: bytes) -> dict[str, bytes]:
    """PIK, MAK and TDK from layout 8 (each 16 bytes under the TMK, then its 4-byte SM4 KCV),
    each KCV checked."""
    assert len(field62) == 60
    keys = {}
    for index, name in enumerate(("PIK", "MAK", "TDK")):
        chunk = field62[index * 20 : (index + 1) * 20]
        key = independent_sm4.decrypt(SLOT_1_TMK, chunk[:16])
        assert independent_sm4.kcv(key) == chunk[16:], f"{name} KCV"
        keys[name] = key
    return keys


def format_0(pin: str, pan: str) -> bytes:
    """ISO 9564 format 0: the PIN field XOR the 12 rightmost PAN digits (check digit out)."""
    pin_field = bytes.fromhex(f"{len(pin):02d}{pin}".ljust(16, "F"))
    pan_field = bytes.fromhex("0000" + pan[:-1][-12:])
    return bytes(a ^ b for a, b in zip(pin_field, pan_field, strict=True))


def test_an_sm4_session_checks_out_under_an_independent_sm4(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"module": {"key_slot": SM4_SLOT}}) as rig:
            crossed: list[tuple[bytes, bytes]] = []
            handle = rig.host.handle

            def recording(frame: bytes) -> bytes | None:
                answer = handle(frame)
                crossed.append((frame, answer or b""))
                return answer

            rig.host.handle = recording
            await rig.agent.sender.sign_in()  # a fresh session, seen from its first byte
            for request in (await pin_purchase(rig, 1800), app_purchase(1900)):
                assert (await exchange(rig.socket, request)).text(39) == "00"
            return crossed

    crossed = run(scenario())
    decoded = [
        (decode_frame(request, Layout.TPDU).message, decode_frame(answer, Layout.TPDU).message)
        for request, answer in crossed
    ]
    [(_, signed_in)] = [(q, a) for q, a in decoded if q.mti == "0800"]
    assert signed_in.text(39) == "00" and signed_in.text(60)[8:11] == "006"
    keys = layout_8_keys(signed_in.fields[62])

    purchases = [i for i, (q, _) in enumerate(decoded) if q.mti == "0200"]
    assert len(purchases) == 2
    for index in purchases:
        for frame in crossed[index]:  # the request the agent MACed, the answer it verified
            message = frame[PREFIX:]
            mab, mac = message[:-MAC_BYTES], message[-MAC_BYTES:]
            assert independent_sm4.cup_mac(mab, keys["MAK"]) == mac

    pin_request = decoded[purchases[0]][0]
    assert (pin_request.fields[52], pin_request.text(53)) == (bytes(8), "23" + "0" * 14)
    block = independent_sm4.decrypt(keys["PIK"], usages(pin_request.fields[59])["A1"])
    assert block == format_0(PIN, PAN) + b"\xff" * 8

    for index in purchases:  # the agent's A2: the module's TUSN, the PAN's last 6, its MAC
        a2 = usages(usages(decoded[index][0].fields[59])["A2"])
        tusn, factor = a2["02"], a2["03"]
        assert factor == PAN[-6:].encode()
        assert a2["04"] == independent_sm4.cup_mac(tusn + factor, TUSN_KEY)
