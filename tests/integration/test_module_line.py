"""The real driver against the real simulator over a real pty and over socket://, and against a
scripted module on a pty for misbehaviour. Timing bounds are generous: they prove "no hang past the
timeout", not speed (that is benchmarks/module.py)."""

import threading
import time

import pytest

from agent.sim.module import SM4_SLOT, TEST_SM4_TMK, TEST_TMK, TEST_TUSN_KEY
from agent.wire.mac import mac_block, software_cup_mac, tusn_ciphertext, x919_mac
from agent.wire.working_keys import LAYOUTS, issue_working_keys
from drivers.framing import NAK, Control, Frame
from drivers.module import (
    Command,
    MacAlgorithm,
    ModuleLinkError,
    ModuleProtocolError,
    ModuleStatusError,
    ModuleTimeout,
    Status,
    TusnAnswer,
)
from drivers.serial_module import DEFAULT_TIMEOUTS, SerialCardModule
from tests.integration.module_rig import VANISH, ScriptedModule, ack, reply, simulator_rig

CLEAR = {"PIK": bytes(range(1, 17)), "MAK": bytes(range(17, 33)), "TDK": bytes(range(33, 49))}
SLACK = 0.5  # scheduling noise on a shared machine


def clear_keys(layout: int) -> dict[str, bytes]:
    """Clear working keys of the lengths field 62 layout ``layout`` has."""
    return {name: CLEAR[name][:length] for name, length in LAYOUTS[layout].keys}


def load(module: SerialCardModule, layout: int = 2) -> None:
    issued = issue_working_keys(TEST_TMK, layout, clear_keys(layout))
    module.load_working_keys(0, layout, issued.to_field62())


@pytest.fixture(params=["pty", "tcp"])
def rig(request, tmp_path):
    with simulator_rig(tmp_path, request.param) as rig:
        yield rig


def test_every_command(rig) -> None:
    module = rig.module
    assert module.ping() >= 0
    info = module.info()
    assert (info.serial, info.tampered) == ("SIM0000000000001", False)
    assert abs((module.rtc() - __import__("datetime").datetime.now()).total_seconds()) < 5
    assert module.key_status(0)["TMK"].kcv_hex == "08D7B4FB"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_loaded_kcvs_equal_field_62(rig, layout: int) -> None:
    # the SM4 layout goes to the simulator's SM4 slot, under its TMK
    slot, tmk = (SM4_SLOT, TEST_SM4_TMK) if LAYOUTS[layout].sm4 else (0, TEST_TMK)
    issued = issue_working_keys(tmk, layout, clear_keys(layout))
    rig.module.load_working_keys(slot, layout, issued.to_field62())
    status = rig.module.key_status(slot)
    assert {name: status[name].kcv_hex for name in issued.kcvs()} == issued.kcvs()


def test_kcv_mismatch_is_refused_naming_the_key(rig) -> None:
    raw = bytearray(issue_working_keys(TEST_TMK, 2, clear_keys(2)).to_field62())
    raw[20 + 16] ^= 0x01  # MAK's KCV
    with pytest.raises(ModuleStatusError) as err:
        rig.module.load_working_keys(0, 2, bytes(raw))
    assert (err.value.status, err.value.key) == (Status.KCV_MISMATCH, "MAK")
    assert "KCV mismatch for MAK (status 04)" in str(err.value)


def test_module_mac_equals_software_mac(rig) -> None:
    load(rig.module)
    mab = b"\x02\x00" + bytes(range(200))
    expected = software_cup_mac(mab, CLEAR["MAK"])
    assert rig.module.mac_from_block(mac_block(mab)) == expected
    assert rig.module.mac(0, MacAlgorithm.CUP_ECB, mab) == expected
    assert rig.module.mac(0, MacAlgorithm.X919, mab) == x919_mac(mab, CLEAR["MAK"])


def test_tusn_is_the_simulators_answer(rig) -> None:
    tusn = "00009902" + rig.module.info().serial
    expected = TusnAnswer("02", tusn, tusn_ciphertext(TEST_TUSN_KEY, tusn, "004318"))
    assert rig.module.tusn("004318") == expected
    executed = rig.sim.executed
    with pytest.raises(ValueError, match="6 ASCII digits"):
        rig.module.tusn("04318")  # refused before it reaches the line
    assert rig.sim.executed == executed
    rig.sim.state.tusn_key = None
    with pytest.raises(ModuleStatusError, match=r"refused TUSN: key absent \(status 03\)"):
        rig.module.tusn("004318")


def test_one_percent_noise_both_ways_every_command_succeeds(rig) -> None:
    load(rig.module)
    rig.port.faults.noise = 0.01
    for i in range(150):
        mab = i.to_bytes(4, "big") * 9
        assert rig.module.mac_from_block(mac_block(mab)) == software_cup_mac(mab, CLEAR["MAK"])
    stats = rig.module.stats
    assert stats.bad_frames + stats.retransmits > 0, "the noise never hit a frame"


def test_dropped_bytes_are_recovered(rig) -> None:
    load(rig.module)
    rig.port.faults.drop = 0.01
    for _ in range(50):
        assert rig.module.key_status(0)["MAK"].present


def test_garbage_on_the_line_is_skipped(rig) -> None:
    rig.module.ping()
    rig.port.inject(bytes(range(256)) * 2)
    assert rig.module.key_status(0)["TMK"].present


def test_busy_is_retried_then_reported(rig) -> None:
    rig.sim.busy_answers = 2
    assert rig.module.ping() >= 0
    rig.sim.busy_answers = 10
    with pytest.raises(ModuleStatusError, match=r"refused PING: busy \(status 05\)"):
        rig.module.ping()


def test_tamper(rig) -> None:
    rig.sim.tampered = True
    assert rig.module.info().tampered
    with pytest.raises(ModuleStatusError, match=r"tampered or locked \(status 06\)"):
        rig.module.key_status(0)


def test_slow_reply_is_waited_for_and_too_slow_is_a_timeout(rig) -> None:
    rig.port.delay = 0.7  # beyond the resend point: the request goes out again and is replayed
    executed = rig.sim.executed
    assert rig.module.ping() >= 0
    time.sleep(0.8)  # let the replayed duplicate arrive and be discarded
    assert rig.sim.executed == executed + 1, "a repeated request must not execute twice"
    rig.port.delay = 3.0
    started = time.monotonic()
    with pytest.raises(ModuleTimeout, match=r"no response to PING within 1.0 s"):
        rig.module.ping()
    assert time.monotonic() - started < DEFAULT_TIMEOUTS[0] + SLACK


def test_unplug_and_replug_without_a_new_driver(tmp_path) -> None:
    with simulator_rig(tmp_path) as rig:
        rig.module.ping()
        rig.port.unplug()
        started = time.monotonic()
        with pytest.raises(ModuleLinkError, match="cannot be opened"):
            rig.module.ping()
        assert time.monotonic() - started < 1.0 + SLACK
        rig.port.replug()
        assert rig.module.key_status(0)["TMK"].present


def test_unplug_during_a_command_then_replug(tmp_path) -> None:
    with simulator_rig(tmp_path) as rig:
        rig.module.ping()
        rig.port.delay = 0.3
        result: list[object] = []
        worker = threading.Thread(target=lambda: result.append(rig.module.key_status(0)))
        worker.start()
        time.sleep(0.1)
        rig.port.unplug()
        time.sleep(0.2)
        rig.port.replug()
        worker.join(timeout=5)
        assert result and result[0]["TMK"].present


# ------------------------------------------------------------------------ scripted misbehaviour


def scripted(behave) -> tuple[ScriptedModule, SerialCardModule]:
    return (script := ScriptedModule(behave)), SerialCardModule(script.path)


def test_module_that_never_answers_is_a_link_error() -> None:
    script, module = scripted(lambda event: [])
    started = time.monotonic()
    with pytest.raises(ModuleLinkError, match=r"did not acknowledge PING .* after 4 transmissions"):
        module.ping()
    assert time.monotonic() - started < 4 * 0.2 + SLACK
    assert len([e for e in script.received if isinstance(e, Frame)]) == 4
    module.close(), script.close()


def test_ack_without_response_is_a_timeout() -> None:
    script, module = scripted(lambda event: [ack()] if isinstance(event, Frame) else [])
    started = time.monotonic()
    with pytest.raises(ModuleTimeout):
        module.ping()
    assert time.monotonic() - started < 1.0 + SLACK
    module.close(), script.close()


def test_a_request_naked_four_times_goes_again_with_a_new_seq() -> None:
    """A noisy line can damage all four copies of a frame: the module NAKs each. That round is a
    link error (DESIGN.md section 5); the driver, with time left, sends the command again as a
    new request, which the module executes once."""
    frames = []

    def behave(event):
        if isinstance(event, Frame):
            frames.append(event)
            if len(frames) <= 4:
                return [bytes([NAK])]
            return [ack(), reply(event, b"\x00" + (9).to_bytes(4, "big"))]
        return []

    script, module = scripted(behave)
    assert module.ping() == 9
    assert [f.seq for f in frames[:4]] == [frames[0].seq] * 4
    assert frames[4].seq == (frames[0].seq + 1) & 0xFF
    module.close(), script.close()


def test_a_module_that_naks_every_frame_is_a_link_error_not_a_flood() -> None:
    """A module that NAKs whatever it gets (a CRC it computes otherwise, a line that damages
    every frame): three rounds of four copies, then a link error naming it, well within the
    command's time; not new requests until the time is up (a timeout, SEQs wrapping round)."""
    frames = []

    def behave(event):
        if isinstance(event, Frame):
            frames.append(event)
            return [bytes([NAK])]
        return []

    script, module = scripted(behave)
    started = time.monotonic()
    with pytest.raises(ModuleLinkError, match=r"NAKed every copy of MAC in 3 rounds"):
        module.mac_from_block(bytes(8))
    assert time.monotonic() - started < 1.0
    assert len(frames) == 12 and len({f.seq for f in frames}) == 3
    module.close(), script.close()


def test_the_apps_commands_queue_behind_the_agents_own() -> None:
    """DESIGN.md section 5: "App commands queue behind the agent's own". Four app connections
    keep the line busy with commands of 30 ms each; each MAC of the agent's waits for the one
    app command on the line, then goes: never behind the others waiting."""
    step = 0.03

    def behave(event):
        if not isinstance(event, Frame):
            return []
        data = bytes(8) if event.cmd == Command.MAC else (1).to_bytes(4, "big")
        return [ack(), step, reply(event, b"\x00" + data)]

    script, module = scripted(behave)
    stop = threading.Event()

    def app() -> None:
        while not stop.is_set():
            module.forward(Command.PING, b"")

    apps = [threading.Thread(target=app) for _ in range(4)]
    for thread in apps:
        thread.start()
    try:
        time.sleep(0.1)  # every app connection has a command waiting
        waits = []
        for _ in range(10):
            started = time.monotonic()
            assert module.mac_from_block(bytes(8)) == bytes(8)
            waits.append(time.monotonic() - started)
    finally:
        stop.set()
        for thread in apps:
            thread.join()
        module.close(), script.close()
    assert max(waits) < 2 * step + SLACK, waits  # the app command on the line, then its own


def test_another_commands_response_to_our_seq_is_a_replay_asked_again_with_a_new_seq() -> None:
    """DESIGN.md section 5: a request repeated with the same SEQ is answered from the module's
    last response. A restarted agent's first SEQ may be the one the module saw last (1 in 256):
    the module replays that command's response. The driver takes it for a replay and asks
    again with a new SEQ, once; a module that does it again is a protocol error."""
    frames: list[Frame] = []

    def replaying(times: int):
        def behave(event):
            if not isinstance(event, Frame):
                return []
            frames.append(event)
            if len(frames) <= times:  # the last response it gave: a KEY_STATUS's
                return [ack(), Frame(event.seq, Command.KEY_STATUS | 0x80, b"\x00").encode()]
            return [ack(), reply(event, b"\x00" + (3).to_bytes(4, "big"))]

        return behave

    script, module = scripted(replaying(1))
    assert module.ping() == 3
    assert [f.cmd for f in frames] == [Command.PING, Command.PING]
    assert frames[1].seq == (frames[0].seq + 1) & 0xFF
    module.close(), script.close()
    frames.clear()
    script, module = scripted(replaying(2))
    with pytest.raises(ModuleProtocolError, match=r"with command 0x82's response, twice"):
        module.ping()
    module.close(), script.close()


def crc_broken(frame: bytes) -> bytes:
    """``frame`` with its CRC's last byte changed (set to 0 it stays right for some SEQs: the
    CRC of SEQ 138 or 215's PING answer ends in 0x00)."""
    return frame[:-1] + bytes([frame[-1] ^ 0xFF])


def test_an_answer_damaged_until_the_module_gives_up_is_asked_again_early() -> None:
    """Noise can damage all four copies of the module's answer: it then stops (DESIGN.md section
    5). The driver asks again with the same SEQ once the line has been silent past the module's
    retransmission time, not after its half-second resend wait, so two such rounds still fit in
    PING's one second."""
    requests: list[Frame] = []
    naks_this_round = 0

    def behave(event):
        nonlocal naks_this_round
        if isinstance(event, Frame):
            requests.append(event)
            naks_this_round = 0
            answer = reply(event, b"\x00" + (5).to_bytes(4, "big"))
            return [ack(), answer if len(requests) > 2 else crc_broken(answer)]
        if event == Control(NAK) and len(requests) <= 2:
            naks_this_round += 1
            damaged = crc_broken(reply(requests[-1], b"\x00" + (5).to_bytes(4, "big")))
            return [damaged] if naks_this_round <= 3 else []  # then silence: it gave up
        return []

    script, module = scripted(behave)
    assert module.ping() == 5
    assert [f.seq for f in requests] == [requests[0].seq] * 3  # the module replays, never re-runs
    assert module.stats.bad_frames == 8
    module.close(), script.close()


def _bad_first_then_good(bad: bytes):
    sent = []

    def behave(event):
        if isinstance(event, Frame):
            sent.append(event)
            return [ack(), bad]
        if event == Control(NAK):
            return [reply(sent[-1], b"\x00" + (7).to_bytes(4, "big"))]
        return []

    return behave


@pytest.mark.parametrize(
    "bad",
    [
        b"\x02\x04\x01\x05\x80" + bytes(20),  # LEN 1025
        Frame(0, 0x80, b"\x00\x00\x00\x00\x07").encode()[:-1] + b"\x00",  # CRC wrong
        Frame(0, 0x80, b"\x00\x00\x00\x00\x07").encode()[:-3] + b"\x09\x00\x00",  # ETX wrong
    ],
    ids=["len-over-1024", "crc", "etx"],
)
def test_bad_response_frame_is_naked_and_the_retry_succeeds(bad: bytes) -> None:
    script, module = scripted(_bad_first_then_good(bad))
    assert module.ping() == 7
    assert module.stats.bad_frames >= 1
    module.close(), script.close()


def test_half_a_frame_then_silence_is_a_timeout() -> None:
    def behave(event):
        if isinstance(event, Frame):
            return [ack(), reply(event, b"\x00" + bytes(4))[:5]]
        return []

    script, module = scripted(behave)
    with pytest.raises(ModuleTimeout):
        module.ping()
    assert module.stats.last_bad_frame.startswith("truncated frame")
    module.close(), script.close()


def test_a_frame_that_comes_in_pieces_is_one_frame() -> None:
    """A USB-serial adapter passes bytes on at its latency timer (16 ms), a socket:// line at
    the network's pace: a pause of 50 ms inside a response is no truncation."""

    def behave(event):
        if isinstance(event, Frame):
            answer = reply(event, b"\x00" + (7).to_bytes(4, "big"))
            return [ack(), answer[:5], 0.05, answer[5:]]
        return []

    script, module = scripted(behave)
    assert module.ping() == 7
    assert module.stats.bad_frames == 0
    module.close(), script.close()


def test_module_vanishing_mid_frame_is_a_link_error() -> None:
    def behave(event):
        if isinstance(event, Frame):
            return [ack(), reply(event, b"\x00" + bytes(4))[:4], 0.05, VANISH]
        return []

    script, module = scripted(behave)
    started = time.monotonic()
    with pytest.raises(ModuleLinkError):
        module.ping()
    assert time.monotonic() - started < 1.0 + SLACK
    module.close(), script.close()


@pytest.mark.parametrize(
    ("data", "error", "text"),
    [
        (b"\x01", ModuleStatusError, r"refused PING: unknown command \(status 01\)"),
        (b"\x00\x01", ModuleProtocolError, "PING response carries 1 data bytes, expected 4"),
        (b"", ModuleProtocolError, "PING response has no status byte"),
    ],
)
def test_bad_responses_are_typed_errors(data: bytes, error: type, text: str) -> None:
    script, module = scripted(lambda e: [ack(), reply(e, data)] if isinstance(e, Frame) else [])
    with pytest.raises(error, match=text):
        module.ping()
    module.close(), script.close()


def test_malformed_tusn_answer_is_a_protocol_error() -> None:
    lower = b"\x00" + b"02" + bytes([4]) + b"9902" + b"d60af15d"

    script, module = scripted(lambda e: [ack(), reply(e, lower)] if isinstance(e, Frame) else [])
    with pytest.raises(ModuleProtocolError, match="ciphertext 'd60af15d' is not 8 upper-case"):
        module.tusn("000052")
    module.close(), script.close()


def test_socket_ports_turn_off_nagle(tmp_path) -> None:
    # Without TCP_NODELAY every single-byte ACK waits for a delayed ACK: ~40 ms per MAC.
    import socket

    with simulator_rig(tmp_path, "tcp") as rig:
        rig.module.ping()
        sock = rig.module._port._socket  # pyserial's socket, reached the same way the driver does
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_loop_url_opens_and_times_out_typed() -> None:
    # loop:// echoes the request back: the driver sees its own frame and an echoed ACK, never a
    # response. It must end in a typed timeout, within the budget.
    with SerialCardModule("loop://") as module:
        started = time.monotonic()
        with pytest.raises(ModuleTimeout, match="no response to PING"):
            module.ping()
        assert time.monotonic() - started < DEFAULT_TIMEOUTS[0] + SLACK
