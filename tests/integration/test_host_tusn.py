"""The host simulator checks field 59 A2 as an acquirer does under the CUP rules of 2017 (DESIGN.md
section 17), over real TCP: a terminal of this file's own signs in, MACs its requests under the MAK
the 0810 gave it, and builds A2 with the module simulator's documented TUSN key."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.sim.host import DEFAULT_TUSN, TEST_TERMINAL, TEST_TMK, AcquirerHost
from agent.sim.host_server import HostServer
from agent.sim.module import TEST_TUSN_KEY, ModuleState
from agent.wire import field59
from agent.wire.builders import (
    Card,
    Terminal,
    purchase_request,
    reversal_request,
    signin_request,
)
from agent.wire.frame import Header, Layout, Tpdu, decode_frame, host_frame
from agent.wire.mac import DesKey, cup_ecb_mac, encode_with_mac, tusn_ciphertext
from agent.wire.message import Message, encode_message
from agent.wire.working_keys import parse_field62
from tests.integration.test_simulators import call
from tests.processes import HostProcess

TERMINAL = Terminal(TEST_TERMINAL["tid"], TEST_TERMINAL["mid"])
PAN = "6217001234567890123"
FACTOR = PAN[-6:]
CARD = Card(pan=PAN, expiry="2812", track2=PAN + "=28121010000000000")
OTHER_TUSN = "0000990200000042"  # a terminal of the same maker whose TUSN nobody reported
OTHER_KEY = bytes.fromhex("FFEEDDCCBBAA99887766554433221100")
STANS = itertools.count(1)  # one run for every connection: the host answers a STAN again with 94


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def a2(tusn: str = DEFAULT_TUSN, factor: str = FACTOR, key: bytes = TEST_TUSN_KEY) -> bytes:
    """Field 59 with an A2 as the module simulator would have it built."""
    value = field59.build_a2("02", tusn, factor, tusn_ciphertext(key, tusn, factor), "1.0")
    return field59.with_usage(None, field59.TUSN_USAGE, value)


class Till:
    """One terminal on one TCP connection to the host."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.mak = b""

    def _mac(self, r: bytes) -> bytes:
        return cup_ecb_mac(r, DesKey(self.mak).encrypt)

    async def exchange(self, message: Message) -> Message:
        macked = 64 in message  # the sign-in goes without one: there is no MAK yet
        body = encode_with_mac(message, self._mac) if macked else encode_message(message)
        self.writer.write(host_frame(body, Tpdu(), Header()))
        await self.writer.drain()
        length = int.from_bytes(await self.reader.readexactly(2), "big")
        return decode_frame(await self.reader.readexactly(length), Layout.TPDU).message

    async def sign_in(self) -> None:
        answer = await self.exchange(signin_request(TERMINAL, stan=next(STANS), batch=1))
        assert answer.text(39) == "00"
        mak = parse_field62(answer[62], "003").key("MAK").ciphertext
        self.mak = b"".join(DesKey(TEST_TMK).decrypt(mak[i : i + 8]) for i in range(0, len(mak), 8))

    def purchase(self, field_59: bytes | None = None, card: Card = CARD) -> Message:
        message = purchase_request(TERMINAL, stan=next(STANS), batch=1, amount_fen=1234, card=card)
        if field_59 is not None:
            message.fields[59] = field_59
        return message

    def pre_authorisation(self, field_59: bytes | None = None) -> Message:
        message = self.purchase(field_59)
        message.mti = "0100"
        message.fields.update({3: "030000", 25: "06", 60: "10000001000"})
        return message

    def balance_inquiry(self) -> Message:
        message = self.purchase()
        del message.fields[4]
        message.fields.update({3: "310000", 60: "01000001000"})
        return message


@contextlib.asynccontextmanager
async def till_at(address: str) -> AsyncIterator[Till]:
    """A signed-in terminal connected to the host at ``address`` (HOST:PORT)."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        till = Till(reader, writer)
        await till.sign_in()
        yield till
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def till_of(host: AcquirerHost) -> AsyncIterator[Till]:
    """``host`` served on a TCP port of its own, and a signed-in terminal connected to it."""
    server = HostServer(host)
    address, port = await server.start()
    try:
        async with till_at(f"{address}:{port}") as till:
            yield till
    finally:
        await server.close()


def checking_host(tmp_path: Path, **settings: object) -> AcquirerHost:
    return AcquirerHost(tmp_path / "registry.json", check_tusn=True, **settings)


def test_the_default_tusn_is_the_module_simulators() -> None:
    assert DEFAULT_TUSN == ModuleState(None).tusn == "00009902SIM0000000000001"


def test_a_right_a2_is_approved(tmp_path) -> None:
    host = checking_host(tmp_path)

    async def scenario() -> None:
        async with till_of(host) as till:
            purchase = till.purchase(a2())
            answer = await till.exchange(purchase)
            assert (answer.mti, answer.text(39)) == ("0210", "00")
            answer = await till.exchange(till.pre_authorisation(a2()))
            assert (answer.mti, answer.text(39)) == ("0110", "00")
            # the random factor of a card read from its track only
            track_only = Card(expiry="2812", track2=CARD.track2)
            answer = await till.exchange(till.purchase(a2(), card=track_only))
            assert answer.text(39) == "00"

    run(scenario())
    assert len(host.ledger.purchases) == 3
    assert host.state()["tusn_refusals"] == {}


# each a terminal's field 59 for the test terminal and card, and why the acquirer refuses it
REFUSALS = [
    pytest.param(None, "a2-missing", id="no-59"),
    pytest.param(
        field59.with_usage(None, field59.LOCATION, field59.build_a5({"mcc": "460"})),
        "a2-missing",
        id="59-without-A2",
    ),
    pytest.param(b"A2", "a2-malformed", id="59-not-usages"),
    pytest.param(
        field59.with_usage(
            None,
            field59.TUSN_USAGE,
            field59.build_subusages([("01", "02"), ("02", DEFAULT_TUSN), ("03", FACTOR)], "A2"),
        ),
        "a2-malformed",
        id="A2-without-ciphertext",
    ),
    pytest.param(a2(tusn=OTHER_TUSN), "tusn-not-reported", id="not-reported"),
    pytest.param(a2(factor="000000"), "factor-mismatch", id="factor-of-another-card"),
    pytest.param(a2(key=OTHER_KEY), "ciphertext-wrong", id="another-key"),
]


@pytest.mark.parametrize(("field_59", "reason"), REFUSALS)
def test_a_wrong_a2_is_refused_and_moves_no_money(tmp_path, field_59, reason: str) -> None:
    host = checking_host(tmp_path, tusn_refusal="T1")

    async def scenario() -> None:
        async with till_of(host) as till:
            purchase = till.purchase(field_59)
            answer = await till.exchange(purchase)
            assert (answer.mti, answer.text(39)) == ("0210", "T1")
            assert 37 not in answer and 38 not in answer  # no RRN, no authorisation code
            # the terminal's reversal names a purchase the host never approved
            reversal = await till.exchange(reversal_request(purchase, "98"))
            assert reversal.text(39) == "25"
            # a pre-authorisation is checked the same way
            answer = await till.exchange(till.pre_authorisation(field_59))
            assert (answer.mti, answer.text(39)) == ("0110", "T1")

    run(scenario())
    state = host.state()
    assert state["purchases"] == {}
    assert state["tusn_refusals"] == {reason: 2}
    assert state["tusn_refusal"] == "T1"


def test_without_check_tusn_nothing_is_checked(tmp_path) -> None:
    host = AcquirerHost(tmp_path / "registry.json")

    async def scenario() -> None:
        async with till_of(host) as till:
            for field_59 in (None, a2(tusn=OTHER_TUSN), a2(key=OTHER_KEY)):
                assert (await till.exchange(till.purchase(field_59))).text(39) == "00"

    run(scenario())
    assert host.state()["check_tusn"] is False
    assert len(host.ledger.purchases) == 3 and host.ledger.tusn_refusals == {}


def test_requests_without_a2_are_not_checked(tmp_path) -> None:
    """A balance inquiry, a void and a reversal carry no A2 under the rules."""
    host = checking_host(tmp_path)

    async def scenario() -> None:
        async with till_of(host) as till:
            assert (await till.exchange(till.balance_inquiry())).text(39) == "00"
            purchase = till.purchase(a2())
            assert (await till.exchange(purchase)).text(39) == "00"
            void = till.purchase()
            void.fields.update({3: "200000", 60: "23000001000", 61: f"000001{purchase[11]}"})
            assert (await till.exchange(void)).text(39) == "00"
            assert (await till.exchange(reversal_request(void, "98"))).text(39) == "00"

    run(scenario())
    assert host.ledger.tusn_refusals == {}


def test_reporting_the_tusn_over_the_admin_api_lets_the_next_purchase_through(tmp_path) -> None:
    process = HostProcess(tmp_path, extra=["--check-tusn"])
    admin = process.admin
    try:
        assert process.state()["check_tusn"] is True

        async def purchase_answer(tusn: str = OTHER_TUSN) -> str:
            async with till_at(process.listen) as till:
                return (await till.exchange(till.purchase(a2(tusn=tusn)))).text(39)

        assert run(purchase_answer()) == "97"
        report = {"tusn": OTHER_TUSN, "reported": True}
        assert call("POST", f"{admin}/terminals/{TERMINAL.tid}/tusn", report) == (200, {"ok": True})
        assert run(purchase_answer()) == "00"
        registry = json.loads((tmp_path / "registry.json").read_text())
        assert registry["terminals"][0]["tusns"] == [DEFAULT_TUSN, OTHER_TUSN]
        # withdrawn: refused again, also after the registry file is read again
        report["reported"] = False
        assert call("POST", f"{admin}/terminals/{TERMINAL.tid}/tusn", report)[0] == 200
        assert call("POST", f"{admin}/reload", {})[0] == 200
        assert run(purchase_answer()) == "97"
        state = process.state()
        assert state["terminals"][0]["tusns"] == [DEFAULT_TUSN]
        assert state["tusn_refusals"] == {"tusn-not-reported": 2}
        # another key: the terminal's ciphertexts under the test key are wrong now
        settings = {"tusn_key": OTHER_KEY.hex(), "tusn_refusal": "A7"}
        assert call("POST", f"{admin}/settings", settings)[0] == 200
        assert run(purchase_answer(DEFAULT_TUSN)) == "A7"
        assert process.state()["tusn_refusals"]["ciphertext-wrong"] == 1
        assert call("POST", f"{admin}/settings", {"check_tusn": False})[0] == 200
        assert run(purchase_answer(DEFAULT_TUSN)) == "00"
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("terminals/10000001/tusn", {}, '"tusn" is missing: the TUSN to report or withdraw'),
        (
            "terminals/10000001/tusn",
            {"tusn": "x" * 51},
            f"a TUSN is 1 to 50 printable ASCII characters, got {'x' * 51!r}",
        ),
        (
            "terminals/10000001/tusn",
            {"tusn": OTHER_TUSN, "reported": "yes"},
            "reported must be true or false, got 'yes'",
        ),
        ("settings", {"check_tusn": 1}, "check_tusn must be true or false, got 1"),
        (
            "settings",
            {"tusn_refusal": "00"},
            "tusn_refusal must be a response code of 2 ASCII letters or digits other than 00, "
            "got '00'",
        ),
        (
            "settings",
            {"tusn_key": "0011"},
            "tusn_key must be 32 hex digits (an SM4 key), got 4 characters",
        ),
        (
            "settings",
            {"tusn_key": "Z" * 32},
            "tusn_key must be 32 hex digits (an SM4 key), got characters that are not hex digits",
        ),
    ],
)
def test_the_admin_api_refuses_bad_tusn_input(tmp_path, path: str, body: dict, error: str) -> None:
    process = HostProcess(tmp_path)
    try:
        assert call("POST", f"{process.admin}/{path}", body) == (400, {"error": error})
        state = process.state()
        assert (state["check_tusn"], state["tusn_refusal"]) == (False, "97")
        assert state["terminals"][0]["tusns"] == [DEFAULT_TUSN]
        assert call("POST", f"{process.admin}/terminals/99999999/tusn", {"tusn": "1"})[0] == 404
    finally:
        process.stop()


def test_the_registry_keeps_the_tusns(tmp_path) -> None:
    registry = tmp_path / "registry.json"
    host = AcquirerHost(registry)
    host.register("20000002", "898100012340002")
    host.report_tusn("20000002", OTHER_TUSN)
    host.report_tusn("20000002", DEFAULT_TUSN, reported=False)
    again = AcquirerHost(registry)
    assert again.terminals["20000002"].tusns == [OTHER_TUSN]
    assert again.terminals[TERMINAL.tid].tusns == [DEFAULT_TUSN]
    host.reload()
    assert host.terminals["20000002"].tusns == [OTHER_TUSN]
    with pytest.raises(KeyError):
        host.report_tusn("99999999", OTHER_TUSN)


def test_an_old_registry_without_tusns_has_the_simulators_reported(tmp_path) -> None:
    registry = tmp_path / "registry.json"
    old = TEST_TERMINAL | {"status": "active"}
    registry.write_text(json.dumps({"terminals": [old]}))
    host = checking_host(tmp_path)
    assert host.terminals[TERMINAL.tid].tusns == [DEFAULT_TUSN]

    async def scenario() -> str:
        async with till_of(host) as till:
            return (await till.exchange(till.purchase(a2()))).text(39)

    assert run(scenario()) == "00"
    # none reported is said with an empty list; a list of something else is no registry
    registry.write_text(json.dumps({"terminals": [old | {"tusns": []}]}))
    host.reload()
    assert host.terminals[TERMINAL.tid].tusns == []
    registry.write_text(json.dumps({"terminals": [old | {"tusns": DEFAULT_TUSN}]}))
    with pytest.raises(ValueError, match="unreadable: terminal 10000001: tusns is not a list"):
        host.reload()


def test_bad_tusn_settings_are_refused_in_process(tmp_path) -> None:
    with pytest.raises(ValueError, match="tusn_key must be an SM4 key of 16 bytes"):
        checking_host(tmp_path, tusn_key=b"short")
    host = checking_host(tmp_path)
    with pytest.raises(ValueError, match="tusn_refusal"):
        host.set_tusn_check(True, "9", TEST_TUSN_KEY)
    assert (host.check_tusn, host.tusn_refusal, host.tusn_key) == (True, "97", TEST_TUSN_KEY)
