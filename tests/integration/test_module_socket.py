"""The module socket (DESIGN.md section 5) and the PIN purchase: the payment app gets a PIN block
from the module's keypad through the agent, puts it in field 52, and the host simulator decrypts
it under the PIK it issued. Real Unix sockets, the module simulator on a real pty, the host over
TCP."""

import asyncio
import json
import logging
import os
import stat

from agent.sim.module import TEST_PIN
from agent.wire.mac import tusn_ciphertext
from agent.wire.pin import pin_pan
from drivers.framing import Frame, FrameParser
from drivers.module import (
    Command,
    Status,
    TusnAnswer,
    decode_key_status,
    decode_tusn_answer,
    encode_pin_request,
    encode_tusn_request,
)
from tests.integration.gateway_rig import (
    PAN,
    app_purchase,
    exchange,
    gateway_rig,
    module_command,
    pin_purchase,
)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_pin_purchase_is_verified_by_the_host(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            request = await pin_purchase(rig, 2500)
            answer = await exchange(rig.socket, request)
            assert answer.text(39) == "00"
            state = rig.host.state()
            assert (state["pins_verified"], state["pin_failures"], state["mac_failures"]) == (
                1,
                0,
                0,
            )
            [purchase] = state["purchases"].values()
            assert purchase["amount"] == "000000002500"
            return request.fields[52]

    block = run(scenario())
    journal = b"".join(p.read_bytes() for p in tmp_path.glob("journal.sqlite3*"))
    for secret in (block.hex(), block.hex().upper()):
        assert secret not in caplog.text
    assert block not in journal and block.hex().upper().encode() not in journal


def test_wrong_pin_is_55_and_charges_nothing(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.module_port.simulator.keypad.set("1111")
            answer = await exchange(rig.socket, await pin_purchase(rig, 2600))
            assert answer.text(39) == "55"
            state = rig.host.state()
            assert (state["pin_failures"], state["purchases"]) == (1, {})
            rig.module_port.simulator.keypad.set(TEST_PIN)
            assert (await exchange(rig.socket, await pin_purchase(rig, 2601))).text(39) == "00"

    run(scenario())


def test_cancelled_pin_entry_reaches_the_app(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.module_port.simulator.keypad.set("cancel")
            data = bytes([0, 0]) + b"123456789012" + bytes([30])
            assert await module_command(rig.module_socket, Command.PIN_BLOCK, data) == bytes(
                [Status.CANCELLED]
            )

    run(scenario())


def test_app_may_ask_only_what_section_5_allows(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            socket = rig.module_socket
            assert stat.S_IMODE(socket.stat().st_mode) == 0o660
            before = await asyncio.to_thread(rig.agent.module.key_status, 0)
            executed = rig.module_port.simulator.executed
            for command, data in (
                (Command.LOAD_WORKING_KEYS, bytes([0, 2]) + bytes(40)),
                (Command.MAC, bytes([0, 0x81]) + bytes(8)),
                (Command.ENCRYPT, bytes([0, 1]) + bytes(8)),  # under the PIK: no
                (0x7F, b""),
            ):
                assert await module_command(socket, command, data) == bytes([Status.NOT_PERMITTED])
            assert rig.module_port.simulator.executed == executed  # never reached the module
            assert rig.agent.module_proxy.not_permitted == 4
            # what is allowed is forwarded, answered with the app's own SEQ
            assert (await module_command(socket, Command.PING, b"", seq=1))[0] == Status.OK
            status = await module_command(socket, Command.KEY_STATUS, b"\x00", seq=255)
            assert decode_key_status(0, status[1:]) == before
            # ENCRYPT is the module's answer too: scheme 003 loaded no TDK
            encrypt = await module_command(socket, Command.ENCRYPT, bytes([0, 3]) + bytes(8))
            assert encrypt == bytes([Status.KEY_ABSENT])
            # the sale still goes on under the keys the agent loaded
            assert (await exchange(rig.socket, app_purchase(700))).text(39) == "00"

    run(scenario())


def test_tusn_is_forwarded_with_the_apps_seq(tmp_path) -> None:
    """An app that builds field 59 A2 itself gets the module's TUSN answer: the ciphertext the
    simulator's TUSN key gives, under the app's SEQ (module_command checks it)."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            simulator = rig.module_port.simulator
            forwarded, executed = rig.agent.module_proxy.forwarded, simulator.executed
            factor = PAN[-6:]
            data = await module_command(
                rig.module_socket, Command.TUSN, encode_tusn_request(factor), seq=0xC3
            )
            assert data[0] == Status.OK
            key, tusn = simulator.state.tusn_key, simulator.state.tusn
            assert key is not None
            assert decode_tusn_answer(data[1:]) == TusnAnswer(
                "02", tusn, tusn_ciphertext(key, tusn, factor)
            )
            assert rig.agent.module_proxy.forwarded == forwarded + 1
            assert simulator.executed == executed + 1  # reached the module, once
            # the module's refusals reach the app as they are
            bad = await module_command(rig.module_socket, Command.TUSN, b"12345", seq=1)
            assert bad == bytes([Status.BAD_PARAMETER])
            simulator.state.tusn_key = None
            absent = await module_command(rig.module_socket, Command.TUSN, b"123456", seq=2)
            assert absent == bytes([Status.KEY_ABSENT])
            assert rig.agent.module_proxy.not_permitted == 0

    run(scenario())


def test_bad_frames_close_that_connection_only(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.agent.module_proxy.frame_timeout = 0.3
            reader, writer = await asyncio.open_unix_connection(str(rig.module_socket))
            bad = bytearray(Frame(1, Command.PING).encode())
            bad[-1] ^= 0xFF  # CRC
            writer.write(bytes(bad))
            assert await reader.read() == b""  # closed, nothing answered
            writer.close()
            reader, writer = await asyncio.open_unix_connection(str(rig.module_socket))
            writer.write(Frame(1, Command.PING).encode()[:4])  # half a frame, then silence
            assert await reader.read() == b""
            writer.close()
            assert (await module_command(rig.module_socket, Command.PING, b""))[0] == Status.OK

    run(scenario())


def test_a_slow_cardholder_does_not_hold_up_a_sale(tmp_path) -> None:
    """While one app waits for a PIN, another's purchase is MACed and answered."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.module_port.simulator.keypad.delay = 1.5
            done: list[str] = []

            async def typing():
                await pin_purchase(rig, 100)
                done.append("pin")

            pin = asyncio.create_task(typing())
            while rig.module_port.simulator.keypad.entries == 0:
                await asyncio.sleep(0.01)
            assert (await exchange(rig.socket, app_purchase(800))).text(39) == "00"
            done.append("sale")
            await pin
            assert done == ["sale", "pin"]

    run(scenario())


def test_a_frame_dripped_a_byte_at_a_time_is_cut_off(tmp_path) -> None:
    """A frame must be complete within the frame timeout of its first byte, however slowly
    its bytes keep coming."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.agent.module_proxy.frame_timeout = 0.5
            reader, writer = await asyncio.open_unix_connection(str(rig.module_socket))
            frame = Frame(1, Command.PING).encode()
            closed_after = None
            for n in range(len(frame) - 1):  # a byte every 0.2 s: never the whole frame
                writer.write(frame[n : n + 1])
                await writer.drain()
                await asyncio.sleep(0.2)
                if reader.at_eof() or await _closed(reader):
                    closed_after = n
                    break
            writer.close()
            assert closed_after is not None and closed_after <= 4, closed_after

    run(scenario())


def test_a_frame_begun_in_the_read_that_ended_another_has_its_own_time(tmp_path) -> None:
    """DESIGN.md section 5: a frame "must be complete within 5 s of its first byte": its own
    first byte, also when it came in the read that completed the frame before it."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.agent.module_proxy.frame_timeout = 1.0
            reader, writer = await asyncio.open_unix_connection(str(rig.module_socket))
            first, second = Frame(1, Command.PING).encode(), Frame(2, Command.PING).encode()
            writer.write(first[:4])
            await asyncio.sleep(0.7)
            writer.write(first[4:] + second[:4])  # the first ends, the second begins
            await asyncio.sleep(0.6)  # 1.3 s after the first's first byte, 0.6 after its own
            writer.write(second[4:])
            answers = FrameParser()
            got: list[Frame] = []
            while len(got) < 2:
                data = await asyncio.wait_for(reader.read(64), 5)
                assert data, "the connection was closed"
                got += [e for e in answers.feed(data) if isinstance(e, Frame)]
            assert [f.seq for f in got] == [1, 2]
            writer.close()

    run(scenario())


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.01) == b""
    except TimeoutError:
        return False


def test_pin_entries_are_journalled_and_limited(tmp_path) -> None:
    """DESIGN.md section 5: at most module.pin_per_minute PIN entries a minute for a user of
    the socket, one at a time; each journalled with the peer and the masked card digits."""

    async def scenario():
        sections = {"module": {"pin_per_minute": 3}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            for _ in range(3):
                await pin_purchase(rig, 100)
            request = encode_pin_request(0, pin_pan(PAN), 30)
            answer = await module_command(rig.module_socket, Command.PIN_BLOCK, request)
            assert answer == bytes([Status.BUSY])  # the fourth within the minute
            assert rig.module_port.simulator.keypad.entries == 3
            entries = [e for e in rig.agent.journal.events() if e["kind"] == "pin-entry"]
            assert [e["outcome"] for e in entries][:3] == ["served"] * 3
            assert entries[3]["outcome"].startswith("refused: 3 PIN entries in the last minute")
            assert entries[0]["uid"] == os.getuid() and entries[0]["pid"] > 0
            assert entries[0]["pan"] == "*" * 9 + pin_pan(PAN)[-3:]
            assert pin_pan(PAN)[-3:] in PAN[-4:]  # no digit the sale's row does not show
            assert PAN not in json.dumps(entries) and pin_pan(PAN) not in json.dumps(entries)

    run(scenario())


def test_a_flood_of_refused_pin_entries_is_journalled_once_a_minute(tmp_path, monkeypatch) -> None:
    """A member of the group pipelining PIN entries past the limit: each refused at once, but
    only the first of the minute journalled and logged, and how many more at the minute's end
    (or with the next one noted), or the state partition fills and every sale is answered 96."""
    import re

    monkeypatch.setattr("agent.transaction.module_proxy.PIN_WINDOW", 0.5)  # "a minute"

    async def scenario():
        sections = {"module": {"pin_per_minute": 1}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            await pin_purchase(rig, 100)
            request = Frame(9, Command.PIN_BLOCK, encode_pin_request(0, pin_pan(PAN), 30))
            reader, writer = await asyncio.open_unix_connection(str(rig.module_socket))
            writer.write(request.encode() * 500)
            answers = await reader.readexactly(len(Frame(9, 0x92, b"\x05").encode()) * 500)
            assert answers.count(bytes([Status.BUSY])) >= 500
            writer.close()
            await asyncio.sleep(1.2)  # the last "minute" is over: its count is told
            rig.agent.journal.checkpoint()  # the notes written
            entries = [e for e in rig.agent.journal.events() if e["kind"] == "pin-entry"]
            refused = [e["outcome"] for e in entries if e["outcome"].startswith("refused:")]
            assert entries[0]["outcome"] == "served" and 2 <= len(refused) <= 10

            def told(outcome: str) -> int:  # the refusals one line accounts for
                held = re.search(r"\((\d+) more (refused since|in the last minute)", outcome)
                if held is None:
                    return 1  # this one
                # the ones held back before this one, and this one; or at the minute's end
                return int(held[1]) + (held[2] == "refused since")

            assert sum(map(told, refused)) == 500  # every one counted once

    run(scenario())


def test_an_app_that_never_reads_its_answers_loses_its_slot(tmp_path) -> None:
    """Commands pipelined without reading: once the socket buffers are full the answer cannot
    be written; within the frame timeout the connection is closed, and others get in."""

    async def scenario():
        sections = {"gateway": {"max_clients": 1}}
        async with gateway_rig(tmp_path, sections=sections) as rig:
            rig.agent.module_proxy.frame_timeout = 0.5
            _, writer = await asyncio.open_unix_connection(str(rig.module_socket))
            writer.write(Frame(1, 0x7F, b"").encode() * 100_000)  # answered 07, never read
            try:
                proxy = rig.agent.module_proxy
                for expected in (1, 0):  # taken in; its answers pile up, then it is aborted
                    for _ in range(200):
                        if proxy._connections.count == expected:
                            break
                        await asyncio.sleep(0.05)
                ping = await module_command(rig.module_socket, Command.PING, b"")
                assert ping[0] == Status.OK
            finally:
                writer.transport.abort()  # what it has not sent yet is dropped

    run(scenario())


def test_a_user_has_one_pin_entry_at_a_time(tmp_path) -> None:
    """A second PIN entry of the same user while the first waits for the cardholder is
    answered busy, so one user cannot queue entries ahead of another's."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.module_port.simulator.keypad.delay = 1.0
            request = encode_pin_request(0, pin_pan(PAN), 30)
            first = asyncio.create_task(
                module_command(rig.module_socket, Command.PIN_BLOCK, request)
            )
            while rig.module_port.simulator.keypad.entries == 0:
                await asyncio.sleep(0.01)
            second = await module_command(rig.module_socket, Command.PIN_BLOCK, request, seq=7)
            assert second == bytes([Status.BUSY])
            assert (await first)[0] == Status.OK

    run(scenario())
