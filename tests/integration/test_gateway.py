"""App -> gateway -> host simulator over real sockets, with the module simulator on a real pty."""

import asyncio
import contextlib
import json
import logging
import sqlite3
import sys
import threading

import pytest

from agent.wire.frame import with_length
from agent.wire.message import Message, decode_message, encode_message
from tests.conftest import fill_disk
from tests.integration.gateway_rig import (
    PAN,
    TID,
    app_purchase,
    exchange,
    gateway_rig,
    pin_purchase,
    send_and_leave,
)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_sign_in_loads_keys_and_journals_kcvs(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            last = rig.agent.journal.last_signin()
            status = await asyncio.to_thread(rig.agent.module.key_status, 0)
            assert last["kcvs"] == {"PIK": status["PIK"].kcv_hex, "MAK": status["MAK"].kcv_hex}
            assert rig.host.state()["sessions"] == {TID: {"scheme": "003", "layout": 2}}

    run(scenario())


def sales_on_disk(journal_path) -> int:
    """The sales the journal has committed, as another connection sees them (only what is on
    disk)."""
    with contextlib.closing(sqlite3.connect(journal_path)) as other:
        return other.execute("SELECT count(*) FROM transactions WHERE mti = '0200'").fetchone()[0]


def test_purchase_approved_with_the_apps_stan(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            response = await exchange(rig.socket, app_purchase(1234, app_stan=777))
            assert (response.mti, response.text(39), response.text(11)) == ("0210", "00", "000777")
            assert 64 not in response  # verified by the agent
            [purchase] = rig.host.state()["purchases"].values()
            assert purchase["amount"] == "000000001234" and not purchase["reversed"]
            states = [t["state"] for t in rig.agent.journal.transactions()]
            assert states == ["completed", "completed"]  # sign-in, purchase

    run(scenario())


def test_the_request_mac_is_computed_while_the_journal_syncs_its_row(tmp_path, mocker) -> None:
    """The module and the disk are different devices: once a sale's row is written, the request
    is encoded and MACed on the MAC thread while the worker commits the row (the commit does not
    wait for the encoding: here the encoding waits until the row is on disk); the request
    leaves after both. The answer's MAC is checked while its journal row is made and the app's
    answer encoded (the event loop does not encode it again)."""
    from agent.transaction import macs as macs_module
    from agent.transaction import sender, wrap

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            journal, module = rig.agent.journal, rig.agent.sender.macs.module
            seen = []

            pending = journal._pending

            def write_row(db, message, *args):
                seen.append(("row", threading.current_thread().name))
                return pending(db, message, *args)

            encode_for_mac = macs_module.encode_for_mac

            def encode_for_the_host(message, *args):
                if message.mti == "0200":
                    seen.append(("encoding", threading.current_thread().name))
                    for _ in range(500):  # the commit goes on meanwhile, or this waits in vain
                        if sales_on_disk(journal.path):
                            break
                        threading.Event().wait(0.01)
                    seen.append(("on disk", sales_on_disk(journal.path)))
                return encode_for_mac(message, *args)

            computing_mac = module.computing_mac

            @contextlib.contextmanager
            def checking(r, slot=0):
                with computing_mac(r, slot) as mac:
                    seen.append(("check started", threading.current_thread().name))
                    yield mac
                seen.append(("check read", threading.current_thread().name))

            rendered = sender.Rendered.of

            def render(*args):
                seen.append(("rendered", threading.current_thread().name))
                return rendered(*args)

            encode_message = sender.encode_message

            def encode(*args):
                seen.append(("encoded", threading.current_thread().name))
                return encode_message(*args)

            mocker.patch.object(journal, "_pending", side_effect=write_row)
            mocker.patch.object(macs_module, "encode_for_mac", side_effect=encode_for_the_host)
            mocker.patch.object(module, "computing_mac", side_effect=checking)
            mocker.patch.object(sender.Rendered, "of", side_effect=render)
            mocker.patch.object(sender, "encode_message", side_effect=encode)
            on_the_loop = mocker.spy(wrap, "encode_message")
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            assert on_the_loop.call_count == 0
            [row, encoding, on_disk, *checked] = seen
            assert (row[0], encoding[0], on_disk) == ("row", "encoding", ("on disk", 1))
            assert row[1].startswith("pos-agent-worker")
            assert encoding[1].startswith("pos-agent-mac")
            # the answer's MAC is checked on the worker that closes the row
            assert [step for step, _ in checked] == ["check started", "rendered", "encoded",
                                                     "check read"]  # fmt: skip
            assert {thread for _, thread in checked} == {row[1]}
            [key] = rig.host.state()["purchases"]  # TID/batch/STAN
            [sale] = [t for t in journal.transactions() if t["mti"] == "0200"]
            assert key.endswith(f"/{sale['stan']}")

    run(scenario())


def test_a_module_slower_than_the_disk_gets_the_mac_command_before_the_row_is_written(
    tmp_path, mocker
) -> None:
    """On a module that takes longer than the journal's commit (a serial line's 3.2 ms a MAC,
    here 200 ms), the request's MAC command goes on the line before the row is written, on the
    recording thread, and its answer is read there after the commit: the module's time is the
    path's, the commit within it."""
    from agent.transaction import macs as macs_module

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            journal, module = rig.agent.journal, rig.agent.sender.macs.module
            rig.module_port.delay = 0.2
            assert not rig.agent.sender.macs.order.module_first  # nothing seen yet: disk first
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            assert rig.agent.sender.macs.order.module_first  # the first sale's MAC took longer
            seen = []

            computing_mac = module.computing_mac

            @contextlib.contextmanager
            def spy(r, slot=0):
                with computing_mac(r, slot) as mac:
                    seen.append(
                        ("started", threading.current_thread().name, sales_on_disk(journal.path))
                    )
                    yield mac
                seen.append(("read", threading.current_thread().name, sales_on_disk(journal.path)))

            mocker.patch.object(module, "computing_mac", side_effect=spy)
            on_the_mac_thread = mocker.spy(macs_module.Macs, "encode")
            assert (await exchange(rig.socket, app_purchase(2000))).text(39) == "00"
            started, read = seen[:2]
            assert (started[0], started[2], read[0], read[2]) == ("started", 1, "read", 2)
            assert started[1] == read[1] and started[1].startswith("pos-agent-worker")
            assert on_the_mac_thread.call_count == 0
            rig.module_port.delay = 0.0

    run(scenario())


def test_purchase_during_a_sign_in_waits_for_the_new_keys(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add("late", delay=0.3)  # the 0810: the purchase comes meanwhile
            _, response = await asyncio.gather(
                rig.agent.sender.sign_in(), exchange(rig.socket, app_purchase(1000))
            )
            assert response.text(39) == "00"
            assert rig.host.state()["mac_failures"] == 0

    run(scenario())


def test_decline_is_passed_back(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            response = await exchange(rig.socket, app_purchase(5051))
            assert response.text(39) == "51"

    run(scenario())


def test_wrong_response_mac_is_a0_and_a_reversal(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add("wrong-mac")
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "A0"
            assert response.text(63).startswith("AGENT host.response-mac-wrong: response MAC wrong")
            assert [r.reason for r in rig.agent.journal.queued_reversals()] == ["A0"]
            assert await rig.agent.reversals.send() == 1
            [purchase] = rig.host.state()["purchases"].values()
            assert purchase["reversed"], "the host's approval must be reversed"

    run(scenario())


def test_timeout_answers_98_and_the_reversal_goes_before_the_next_purchase(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.5) as rig:
            rig.server.faults.add("no-answer")
            response = await exchange(rig.socket, app_purchase(1000, app_stan=1))
            assert response.text(39) == "98" and "reversal queued" in response.text(63)
            assert response.text(63).startswith("AGENT host.no-answer: ")
            assert len(rig.agent.journal.queued_reversals()) == 1
            second = await exchange(rig.socket, app_purchase(2000, app_stan=2))
            assert second.text(39) == "00"
            assert rig.agent.journal.queued_reversals() == []
            purchases = rig.host.state()["purchases"]
            by_amount = {p["amount"]: p["reversed"] for p in purchases.values()}
            assert by_amount == {"000000001000": True, "000000002000": False}
            assert rig.host.state()["requests"]["0400"] == 1

    run(scenario())


def test_late_response_is_dropped_and_counted(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.3) as rig:
            rig.server.faults.add("late", delay=0.6)
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "98"
            await asyncio.sleep(0.5)
            assert rig.agent.link.late_responses == 1
            # the approval came after all: the timeout's reversal (98) covers it, once
            assert [r.reason for r in rig.agent.journal.queued_reversals()] == ["98"]
            assert await rig.agent.reversals.send() == 1
            [charge] = rig.host.state()["purchases"].values()
            assert charge["reversed"] and rig.host.state()["repeated_reversals"] == 0

    run(scenario())


def test_failover_to_backup(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, primary_down=True) as rig:
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "00"
            assert rig.agent.link.endpoint.port == rig.config.host.backup.port

    run(scenario())


@pytest.mark.parametrize("fault", ["garbage", "close"])
def test_host_garbage_or_close_becomes_98_and_reversal(tmp_path, fault: str) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add(fault)
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "98"
            assert len(rig.agent.journal.queued_reversals()) == 1
            assert (await exchange(rig.socket, app_purchase(3000))).text(39) == "00"
            assert rig.agent.journal.queued_reversals() == []

    run(scenario())


@pytest.mark.parametrize("module_first", [False, True])
def test_a_request_that_cannot_be_encoded_is_answered_96_and_not_sent(
    tmp_path, mocker, module_first
) -> None:
    """Beside a slower disk the request is encoded while the journal syncs its row: an encoding
    that fails closes the row as never sent. Beside a slower module it is encoded before the
    row is written: no row. Either way nothing is sent and nothing is left to reverse."""
    from agent.transaction import macs as macs_module
    from agent.wire.errors import EncodeError

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            if module_first:
                rig.agent.sender.macs.order.module_took(10.0)
            before = len(rig.agent.journal.transactions())
            mocker.patch.object(
                macs_module,
                "encode_for_mac",
                side_effect=EncodeError("an ans..25 holds 26 characters", 60),
            )
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "96" and "26 characters" in response.text(63)
            assert response.text(63).startswith("AGENT request.not-encodable: ")
            rows = rig.agent.journal.transactions()[before:]
            if module_first:
                assert rows == []
            else:
                [sale] = rows
                assert sale["state"] == "not-sent"
                assert sale["detail"].endswith("holds 26 characters")
            assert rig.agent.journal.queued_reversals() == []
            assert rig.host.state()["purchases"] == {}

    run(scenario())


def test_host_down_answers_96_and_sends_nothing(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            await rig.server.close()
            await rig.agent.link.close()
            response = await exchange(rig.socket, app_purchase(1000))
            assert response.text(39) == "96" and "no host reachable" in response.text(63)
            assert response.text(63).startswith("AGENT network.host-unreachable: ")
            assert rig.agent.journal.queued_reversals() == []  # nothing left the terminal
            assert rig.agent.journal.transactions()[-1]["state"] == "not-sent"

    run(scenario())


async def _raw(socket, data: bytes, close_after: bool = True) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(socket))
    writer.write(data)
    await writer.drain()
    if close_after:
        writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff" + b"x" * 100,  # a length of 65535: refused without reading it
        b"\x00\x10abc",  # a frame cut short, then the client closes
    ],
)
def test_broken_framing_closes_that_client_only(tmp_path, data: bytes) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            assert await _raw(rig.socket, data) == b""
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"

    run(scenario())


@pytest.mark.parametrize(
    ("message", "mti", "reason"),
    [
        (b"\x02\x00\x80", "0210", "bitmap"),  # truncated bitmap
        (bytes.fromhex("02000800000000000000"), "0210", "field 5"),  # not in the profile
        (b"\x99", "0810", "format"),  # not even an MTI
    ],
)
def test_a_message_that_does_not_decode_is_answered_30(tmp_path, message, mti, reason) -> None:
    """The always-answer boundary (DESIGN.md sections 4 and 10): a frame whose message does
    not decode gets a local 30 naming what was wrong, never a closed connection."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            reader, writer = await asyncio.open_unix_connection(str(rig.socket))
            writer.write(with_length(message))
            await writer.drain()
            length = int.from_bytes(await reader.readexactly(2), "big")
            answer = decode_message(await reader.readexactly(length))
            writer.close()
            assert (answer.mti, answer.text(39)) == (mti, "30")
            assert answer.text(63).startswith("AGENT request.format: ")
            assert reason in answer.text(63)
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            assert rig.host.state()["requests"].get("0200", 0) == 1  # nothing else was sent
            [told] = [e for e in rig.agent.journal.events() if e["kind"] == "local-answer"]
            assert (told["code"], told["finding"]) == ("30", "request.format")
            assert told["reason"] and answer.text(63).endswith(told["reason"])

    run(scenario())


def test_client_stalling_mid_frame_is_closed(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.agent.app_socket.frame_timeout = 0.3
            stalled = asyncio.create_task(_raw(rig.socket, b"\x00\x40abc", close_after=False))
            assert (await exchange(rig.socket, app_purchase(1000))).text(39) == "00"
            assert await stalled == b""
            assert rig.agent.stats.bad_frames == 1

    run(scenario())


def test_many_clients_at_once(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            responses = await asyncio.gather(
                *(exchange(rig.socket, app_purchase(100 + i, app_stan=i + 1)) for i in range(25))
            )
            assert [r.text(39) for r in responses] == ["00"] * 25
            assert [r.text(11) for r in responses] == [f"{i + 1:06d}" for i in range(25)]
            assert len(rig.host.state()["purchases"]) == 25

    run(scenario())


def test_full_journal_disk_answers_96_and_sends_nothing(tmp_path, tiny_disk) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, journal_dir=tiny_disk) as rig:
            fill_disk(tiny_disk)
            answers = [await exchange(rig.socket, app_purchase(1000 + i)) for i in range(30)]
            refused = [a for a in answers if a.text(39) == "96"]
            # the finding says it; the reason (the journal's path, then SQLite's "database or
            # disk is full") is clipped to field 63's 163 characters under a long test path
            assert refused and refused[0].text(63).startswith("AGENT storage.journal-unwritable: ")
            assert "write failed" in refused[0].text(63)
            # every request the host saw was journalled: nothing left unrecorded
            approved = [a for a in answers if a.text(39) == "00"]
            assert len(rig.host.state()["purchases"]) == len(approved)
            (tiny_disk / "filler").unlink()
            assert (await exchange(rig.socket, app_purchase(5000))).text(39) == "00"

    run(scenario())


def test_disk_full_while_the_host_is_silent_still_answers_and_loses_nothing(
    tmp_path, tiny_disk
) -> None:
    """The pending row is written, the host never answers, and by then the disk is full: the
    app still gets its 98, and the row's close with its reversal, kept in memory, is written
    at the stop, the disk having room again (left pending, it would become a reversal at the
    next start)."""
    from agent.journal import Journal

    async def scenario():
        async with gateway_rig(tmp_path, journal_dir=tiny_disk) as rig:
            rig.server.faults.add("no-answer")
            purchase = asyncio.create_task(exchange(rig.socket, app_purchase(1000)))
            await asyncio.sleep(0.3)  # the request is at the host
            fill_disk(tiny_disk)
            answer = await purchase
            assert answer.text(39) == "98"
            (tiny_disk / "filler").unlink()
        journal = Journal(tiny_disk / "journal.sqlite3")
        assert journal.recover_pending() == 0  # closed at the stop
        [reversal] = journal.queued_reversals()
        assert reversal.reason == "98"
        journal.close()

    run(scenario())


def test_no_card_data_in_logs_journal_or_answers(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    pin_blocks: list[str] = []

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=0.3) as rig:
            with_pin = await pin_purchase(rig, 1000)
            pin_blocks.append(with_pin.fields[52].hex().upper())
            answers = [await exchange(rig.socket, with_pin)]
            rig.server.faults.add("no-answer")
            answers.append(await exchange(rig.socket, app_purchase(1001)))
            rig.server.faults.add("wrong-mac")
            answers.append(await exchange(rig.socket, app_purchase(1002)))
            await rig.agent.reversals.send()
            return answers

    answers = run(scenario())
    journal = b"".join(p.read_bytes() for p in tmp_path.glob("journal.sqlite3*"))
    texts = caplog.text + repr(answers)  # Message's repr is masked too
    for secret in (PAN, *pin_blocks, "28121010000000000"):
        assert secret not in texts
        assert secret.encode() not in journal
    assert PAN.encode() not in journal


def test_a_sign_in_waits_for_the_answers_of_requests_in_flight(tmp_path) -> None:
    """DESIGN.md section 10: an approval is checked under the keys it was sent with. A host's
    front end answers out of order: a sign-in asked while a purchase waits for its answer would
    load keys the purchase's answer was not MACed under (an approval turned A0 and reversed). The
    sign-in waits until the purchase has its answer checked."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add("slow", delay=0.5, mti="0200")
            purchase = asyncio.create_task(exchange(rig.socket, app_purchase(1000)))
            while rig.host.state()["requests"].get("0200", 0) == 0:
                await asyncio.sleep(0.01)
            signed_in = asyncio.create_task(rig.agent.sender.sign_in())
            answer = await purchase
            assert answer.text(39) == "00", answer.text(63)
            await signed_in
            assert rig.host.state()["mac_failures"] == 0
            assert rig.agent.journal.queued_reversals() == []
            assert (await exchange(rig.socket, app_purchase(1100))).text(39) == "00"  # new keys

    run(scenario())


def test_pass_through_forwards_frames_untouched(tmp_path) -> None:
    from agent.wire.frame import Header, Layout, Tpdu, decode_frame

    async def scenario():
        async with gateway_rig(tmp_path, mode="pass-through", sign_in=False) as rig:
            echo = Message("0820", {11: "000050", 41: TID, 42: "898100012340001",
                                    60: "00000001301"})  # fmt: skip
            frame = Tpdu().to_bytes() + Header().to_bytes() + encode_message(echo)
            reader, writer = await asyncio.open_unix_connection(str(rig.socket))
            writer.write(with_length(frame))
            await writer.drain()
            length = int.from_bytes(await reader.readexactly(2), "big")
            answer = decode_frame(await reader.readexactly(length), Layout.TPDU)
            writer.close()
            assert answer.tpdu == Tpdu().swapped()
            assert (answer.message.mti, answer.message.text(39)) == ("0830", "00")
            assert rig.agent.journal.transactions()[-1]["state"] == "completed"

    run(scenario())


def test_pass_through_answers_30_to_a_message_that_does_not_decode(tmp_path) -> None:
    """DESIGN.md section 4: a field no row defines is never a reason to close the app's
    connection, in pass-through mode too: 30 in the host's framing, nothing sent, and the same
    connection goes on. Only a frame without even a TPDU and header closes it."""
    from agent.wire.frame import Header, Layout, Tpdu, decode_frame

    async def scenario():
        async with gateway_rig(tmp_path, mode="pass-through", sign_in=False) as rig:
            before = dict(rig.host.state()["requests"])
            reader, writer = await asyncio.open_unix_connection(str(rig.socket))

            async def answer_to(message: bytes) -> Message:
                writer.write(with_length(Tpdu().to_bytes() + Header().to_bytes() + message))
                await writer.drain()
                length = int.from_bytes(await reader.readexactly(2), "big")
                answer = decode_frame(await reader.readexactly(length), Layout.TPDU)
                assert answer.tpdu == Tpdu().swapped()
                return answer.message

            field_5 = await answer_to(bytes.fromhex("08200800000000000000"))
            assert (field_5.mti, field_5.text(39)) == ("0830", "30")
            assert field_5.text(63).startswith(
                "AGENT request.format: "
            ) and "field 5" in field_5.text(63)
            assert rig.host.state()["requests"] == before
            echo = Message("0820", {11: "000053", 41: TID, 42: "898100012340001",
                                    60: "00000001301"})  # fmt: skip
            assert (await answer_to(encode_message(echo))).text(39) == "00"  # the same connection
            writer.write(with_length(b"\x60\x00"))  # not even a TPDU: closed
            await writer.drain()
            assert await reader.read() == b""
            writer.close()

    run(scenario())


def test_pass_through_answers_98_itself_when_the_host_does_not(tmp_path) -> None:
    """The app keeps its own reversals in this mode: it gets the agent's 98 in the host's framing
    (TPDU swapped, its header), on a connection that stays open, and can reverse from there."""
    from agent.wire.frame import Header, Layout, Tpdu, decode_frame

    async def scenario():
        async with gateway_rig(tmp_path, mode="pass-through", sign_in=False) as rig:
            rig.server.faults.add("no-answer")
            reader, writer = await asyncio.open_unix_connection(str(rig.socket))
            for stan in ("000051", "000052"):
                echo = Message("0820", {11: stan, 41: TID, 42: "898100012340001",
                                        60: "00000001301"})  # fmt: skip
                writer.write(with_length(Tpdu().to_bytes() + Header().to_bytes()
                                         + encode_message(echo)))  # fmt: skip
                await writer.drain()
                length = int.from_bytes(await reader.readexactly(2), "big")
                answer = decode_frame(await reader.readexactly(length), Layout.TPDU)
                assert answer.tpdu == Tpdu().swapped()
                message = answer.message
                assert (message.mti, message.text(11)) == ("0830", stan)
                if stan == "000051":  # the host did not answer: the agent's own 98
                    assert message.text(39) == "98" and message.text(63).startswith("AGENT ")
                else:  # the same connection, the host's answer
                    assert message.text(39) == "00" and 63 not in message
            writer.close()
            states = [t["state"] for t in rig.agent.journal.transactions()[-2:]]
            assert states == ["timed-out", "completed"]

    run(scenario())


def test_a_terminal_whose_keys_are_in_another_slot_checks_responses_there(tmp_path) -> None:
    """Keys in slot 3: requests are MACed and responses checked in slot 3 (not the default 0)."""
    from agent.sim.module import TEST_TMK, ModuleState

    state = ModuleState.load_or_create(tmp_path / "module-state.json")
    state.slots = {3: {"TMK": TEST_TMK}}  # slot 0 has no keys at all
    state.save()

    async def scenario():
        sections = {"module": {"key_slot": 3}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            response = await exchange(rig.socket, app_purchase(1234))
            assert response.text(39) == "00", response
            assert not rig.agent.journal.has_queued_reversals

    run(scenario())


async def leave_before_the_answer(rig, request: Message) -> None:
    """A payment app that sends a request and closes its connection before the host answers."""
    rig.server.faults.add("late", delay=0.3)
    await send_and_leave(rig.socket, request)


def test_an_approval_the_app_cannot_receive_is_reversed(tmp_path) -> None:
    """The app gives up and closes its connection; the host's approval comes after: reversed
    with reason 06, and the host's ledger shows no live charge."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            await leave_before_the_answer(rig, app_purchase(2100, app_stan=450))
            for _ in range(100):
                if rig.agent.journal.queued_reversals():
                    break
                await asyncio.sleep(0.02)
            assert [r.reason for r in rig.agent.journal.queued_reversals()] == ["06"]
            assert await rig.agent.reversals.send() == 1
            [charge] = rig.host.state()["purchases"].values()
            assert charge["reversed"]
            kinds = [e["kind"] for e in rig.agent.journal.events()]
            assert "undelivered-approval-reversed" in kinds

    run(scenario())


@pytest.mark.parametrize("more", [b"", b"\x00", "repetition"])
def test_an_approval_a_tcp_app_cannot_receive_is_reversed(tmp_path, more) -> None:
    """Over TCP, an app that sent its sale (and perhaps a byte more, or the sale again) and
    closed is gone, whatever of it the agent has not read yet: the approval is reversed."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            port = await rig.serve_tcp()
            rig.server.faults.add("late", delay=0.3)
            sale = with_length(encode_message(app_purchase(2100, app_stan=460)))
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(sale + (sale if more == "repetition" else more))
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
            await writer.wait_closed()
            for _ in range(100):
                if rig.agent.journal.queued_reversals():
                    break
                await asyncio.sleep(0.02)
            assert [r.reason for r in rig.agent.journal.queued_reversals()] == ["06"]

    run(scenario())


def test_an_app_that_only_stops_sending_still_gets_its_approval(tmp_path) -> None:
    """A client that shuts down its sending half after its request (as `nc -N` and many test
    scripts do) still reads: on the Unix socket the agent writes the answer (the write fails
    only once the app's socket is gone, test above), and nothing is reversed."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add("late", delay=0.3)
            reader, writer = await asyncio.open_unix_connection(str(rig.socket))
            writer.write(with_length(encode_message(app_purchase(2150, app_stan=452))))
            await writer.drain()
            writer.write_eof()
            length = int.from_bytes(await reader.readexactly(2), "big")
            answer = decode_message(await reader.readexactly(length))
            writer.close()
            assert answer.text(39) == "00"
            await asyncio.sleep(0.3)
            assert rig.agent.journal.queued_reversals() == []
            [charge] = rig.host.state()["purchases"].values()
            assert not charge["reversed"]

    run(scenario())


def test_a_decline_the_app_cannot_receive_needs_no_reversal(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            await leave_before_the_answer(rig, app_purchase(2151, app_stan=451))  # 51: declined
            await asyncio.sleep(0.6)
            assert rig.agent.journal.queued_reversals() == []

    run(scenario())


def test_the_apps_sign_in_gets_the_hosts_0810_without_the_keys(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.host.batch = 17
            signin = Message("0800", {11: "000321", 60: "00000000003", 63: "001"})
            response = await exchange(rig.socket, signin)
            assert (response.mti, response.text(39), response.text(11)) == ("0810", "00", "000321")
            assert 62 not in response and 64 not in response  # the keys stay in the module
            assert response.text(60)[2:8] == "000017"  # the host's batch, which the app uses
            assert 12 in response and 13 in response  # the host's time
            assert rig.host.state()["requests"]["0800"] == 2  # the rig's and the app's

    run(scenario())


def test_every_sign_in_tells_the_signed_in_hooks(tmp_path) -> None:
    """The start's, the app's and recovery's sign-ins alike (firmware_hooks/README.md: "a
    sign-in succeeded and the module took the keys"): a vendor's screen that waits for it
    must not wait for a 97."""
    told = tmp_path / "told"
    folder = tmp_path / "hooks.d" / "signed-in"
    folder.mkdir(parents=True)
    hook = folder / "50-record"
    record = f"open({str(told)!r}, 'a').write(sys.stdin.read().strip() + '\\n')"
    hook.write_text(f"#!{sys.executable}\nimport sys\n{record}\n")
    hook.chmod(0o755)

    async def scenario():
        async with gateway_rig(tmp_path) as rig:  # its start signs in
            signin = Message("0800", {11: "000321", 60: "00000000003", 63: "001"})
            assert (await exchange(rig.socket, signin)).text(39) == "00"
            await rig.agent.remedies.sign_in()
            await asyncio.wait_for(rig.agent.hooks.told(), 10)

    run(scenario())
    payloads = [json.loads(line) for line in told.read_text().splitlines()]
    assert [(p["event"], p["tid"], p["scheme"]) for p in payloads] == [
        ("signed-in", TID, "003")
    ] * 3, payloads
    assert all(len(p["kcvs"]) for p in payloads)


def test_other_network_management_goes_to_the_host(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            echo = Message("0820", {11: "000322", 60: "00000000301"})
            response = await exchange(rig.socket, echo)
            assert (response.mti, response.text(39), response.text(11)) == ("0830", "00", "000322")
            assert rig.host.state()["requests"]["0820"] == 1

    run(scenario())


def test_disk_full_while_a_queued_reversal_goes_answers_and_keeps_its_outcome(
    tmp_path, tiny_disk
) -> None:
    """The host confirms a queued reversal while the journal's disk is full: the app still gets
    an answer (nothing escapes to asyncio), the reversal is not sent again, and its outcome is
    written once space returns."""

    async def scenario():
        async with gateway_rig(tmp_path, journal_dir=tiny_disk) as rig:
            assert (await exchange(rig.socket, app_purchase(1000, app_stan=5))).text(39) == "00"
            [wire] = [t["stan"] for t in rig.agent.journal.transactions() if t["mti"] == "0200"]
            rig.queue_reversal(wire, 1000)  # as if that purchase had timed out
            fill_disk(tiny_disk)
            answer = await exchange(rig.socket, app_purchase(2000))
            assert answer.text(39) == "96"  # not sent: the journal could not record it
            reversals = rig.host.state()["reversals"]
            assert reversals >= 1
            answer = await exchange(rig.socket, app_purchase(2001))
            assert answer.text(39) == "96"
            assert rig.host.state()["reversals"] == reversals  # confirmed once, not resent
            (tiny_disk / "filler").unlink()
            assert (await exchange(rig.socket, app_purchase(3000))).text(39) == "00"
            assert rig.agent.journal.queued_reversals() == []
            assert rig.host.state()["reversals"] == reversals

    run(scenario())


def test_retention_keeps_a_small_partition_serving(tmp_path, small_partition) -> None:
    """1,500 purchases (about 2.2 MB of journal without retention) on a 2 MiB partition: the
    batch settles every 150 (the host's next batch at sign-in), settled rows go once the
    journal passes journal.max_mb, the WAL is checkpointed, and every purchase is approved."""
    import shutil

    cap = 0.5  # MiB

    async def scenario():
        sections = {"journal": {"max_mb": cap}}
        async with gateway_rig(tmp_path, journal_dir=small_partition, sections=sections) as rig:
            journal = rig.agent.journal
            codes = []
            for _day in range(10):
                for n in range(150):
                    answer = await exchange(rig.socket, app_purchase(2000 + 2 * n))  # never 51
                    codes.append(answer.text(39))
                rig.host.batch += 1  # settlement: the host's next batch from the next sign-in
                await rig.agent.sender.sign_in()
                await asyncio.to_thread(journal.prune, 30, int(cap * 2**20))
            assert codes == ["00"] * 1500
            assert journal.size_bytes <= cap * 2**20
            used = shutil.disk_usage(small_partition).used
            assert used < 2 * 2**20
            rows = journal.transactions()
            assert len(rows) < 1500 and rows[-1]["mti"] == "0800"  # the newest are kept

    run(scenario())


def test_an_approval_the_full_disk_could_not_record_is_reversed_once_space_returns(
    tmp_path, tiny_disk
) -> None:
    """The host approves while the journal's disk is full: the app gets 96 (the journal does
    not have the approval), and the agent, still running, reverses it as soon as the journal
    takes writes again, before the next sale (DESIGN.md section 8)."""

    async def scenario():
        async with gateway_rig(tmp_path, journal_dir=tiny_disk) as rig:
            rig.server.faults.add("late", delay=0.5)
            purchase = asyncio.create_task(exchange(rig.socket, app_purchase(1000)))
            await asyncio.sleep(0.25)  # the request is at the host, its row written
            fill_disk(tiny_disk)
            assert (await purchase).text(39) == "96"
            [charge] = rig.host.state()["purchases"].values()
            assert not charge["reversed"]
            (tiny_disk / "filler").unlink()
            assert (await exchange(rig.socket, app_purchase(2000))).text(39) == "00"
            charges = list(rig.host.state()["purchases"].values())
            assert charges[0]["reversed"] and not charges[1]["reversed"]

    run(scenario())


def test_a_timeout_the_full_disk_could_not_record_is_reversed_without_a_restart(
    tmp_path, tiny_disk
) -> None:
    """The host never answers and by then the disk is full: the app gets 98, the row stays
    pending on disk, and once space returns the agent (still running) queues its reversal and
    sends it before the next sale."""

    async def scenario():
        async with gateway_rig(tmp_path, journal_dir=tiny_disk, response_timeout=0.5) as rig:
            rig.server.faults.add("no-answer")
            purchase = asyncio.create_task(exchange(rig.socket, app_purchase(1000)))
            await asyncio.sleep(0.25)  # the request is at the host
            fill_disk(tiny_disk)
            assert (await purchase).text(39) == "98"
            (tiny_disk / "filler").unlink()
            assert (await exchange(rig.socket, app_purchase(2000))).text(39) == "00"
            first, second = rig.host.state()["purchases"].values()
            assert first["reversed"] and not second["reversed"]

    run(scenario())


def test_a_sign_in_whose_keys_the_module_refuses_leaves_no_row_pending(tmp_path) -> None:
    """The host's TMK is not the module's: the module refuses the working keys (KCV mismatch).
    The 0800's row is closed with the module's reason, not left pending for a restart to
    find."""
    from drivers.module import ModuleError

    async def scenario():
        async with gateway_rig(tmp_path, sign_in=False) as rig:
            rig.host.register(rig.config.terminal.tid, rig.config.terminal.mid, bytes(16))
            with pytest.raises(ModuleError):
                await rig.agent.sender.sign_in()
            [row] = [t for t in rig.agent.journal.transactions() if t["mti"] == "0800"]
            assert row["state"] == "failed" and row["detail"].startswith("card module:")

    run(scenario())


@pytest.mark.parametrize(
    ("kind", "module_first"),
    [("purchase", False), ("inquiry", False), ("inquiry", True)],
    ids=["purchase-tusn", "inquiry-mac-disk-first", "inquiry-mac-module-first"],
)
def test_a_sale_held_up_by_a_slow_card_module_is_told_so(
    tmp_path, monkeypatch, kind, module_first
) -> None:
    """The request's patience ran out waiting for the card module, not the disk: the 96 names
    the module (a slow line, many sales on it), not a frozen journal: field 59's TUSN of a
    purchase, an inquiry's MAC read beside the row's sync or after it (module first)."""
    monkeypatch.setattr("agent.transaction.sender.SALE_PATIENCE", 0.5)
    fields = {2: PAN, 3: "310000", 11: "000777", 14: "2812", 22: "021", 25: "00",
              35: PAN + "=28121010000000000", 49: "156", 60: "01000000"}  # fmt: skip
    request = app_purchase(1000) if kind == "purchase" else Message("0200", fields)

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            if module_first:
                rig.agent.sender.macs.order.module_took(10.0)
            rig.module_port.delay = 0.8
            refused = await exchange(rig.socket, request)
            assert refused.text(39) == "96", refused.text(63)
            assert refused.text(63).startswith("AGENT module.slow: ")
            assert "the card module" in refused.text(63)
            assert "frozen" not in refused.text(63)
            rig.module_port.delay = 0.0
            await asyncio.sleep(2)  # the slow commands end; the row is closed as not sent
            assert (await exchange(rig.socket, app_purchase(2000))).text(39) == "00"
            assert rig.host.state()["requests"]["0200"] == 1

    run(scenario())


def test_an_answer_held_up_by_a_slow_module_check_is_told_so_and_reversed(
    tmp_path, monkeypatch
) -> None:
    """The module slows down after the request left: the answer's MAC check outlasts the
    patience. The app is told the module (not a frozen disk) and the approval is reversed."""
    monkeypatch.setattr("agent.transaction.sender.SALE_PATIENCE", 0.5)

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add("late", delay=0.4)
            sale = asyncio.create_task(exchange(rig.socket, app_purchase(1000)))
            await asyncio.sleep(0.2)  # recorded and sent: the host holds its answer
            rig.module_port.delay = 0.8
            refused = await sale
            assert refused.text(39) == "96", refused.text(63)
            assert refused.text(63).startswith("AGENT module.slow: ")
            assert "the answer's MAC check" in refused.text(63)
            rig.module_port.delay = 0.0
            for _ in range(100):
                if rig.agent.journal.queued_reversals():
                    break
                await asyncio.sleep(0.05)
            assert [r.reason for r in rig.agent.journal.queued_reversals()] == ["06"]

    run(scenario())
