"""``agent sim module`` as a real process, driven through its stdin console."""

import subprocess
import sys
from pathlib import Path

import pytest

from drivers.module import ModuleLinkError, ModuleStatusError
from drivers.serial_module import SerialCardModule

AGENT = Path(sys.executable).with_name("agent")


class SimProcess:
    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [str(AGENT), "sim", "module", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.path = self.process.stdout.readline().strip()

    def say(self, command: str) -> str:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=10)
        finally:
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                stream.close()


@pytest.fixture
def sim(tmp_path):
    process = SimProcess(
        "--pty", "--link", str(tmp_path / "module"), "--state", str(tmp_path / "s.json")
    )
    yield process
    process.stop()


def test_first_line_is_the_path_and_the_driver_talks_to_it(sim, tmp_path) -> None:
    assert sim.path == str(tmp_path / "module")
    with SerialCardModule(sim.path) as module:
        assert module.key_status(0)["TMK"].kcv_hex == "08D7B4FB"
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o600


def test_runtime_faults_through_the_console(sim) -> None:
    with SerialCardModule(sim.path) as module:
        assert sim.say("tamper on") == "ok tamper on"
        with pytest.raises(ModuleStatusError, match="tampered"):
            module.key_status(0)
        assert sim.say("tamper off") == "ok tamper off"
        assert sim.say("garbage 300") == "ok garbage 300"
        assert module.key_status(0)["TMK"].present
        assert sim.say("unplug") == "ok unplug"
        with pytest.raises(ModuleLinkError):
            module.ping()
        assert sim.say("replug") == "ok replug"
        assert module.ping() >= 0
        assert sim.say("noise 7").startswith("error: noise: a rate is between 0 and 1")
        assert sim.say("status").startswith('ok {"path"')


def test_terminates_cleanly(sim) -> None:
    assert sim.stop() == 0


def test_tcp_listener(tmp_path) -> None:
    sim = SimProcess("--url", "socket://127.0.0.1:0", "--state", str(tmp_path / "s.json"))
    try:
        assert sim.path.startswith("socket://127.0.0.1:")
        with SerialCardModule(sim.path) as module:
            assert module.info().serial == "SIM0000000000001"
    finally:
        assert sim.stop() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--noise", "2"], "noise: a rate is between 0 and 1, got 2"),
        (["--url", "tcp://127.0.0.1:1"], "only socket://HOST:PORT can be listened on"),
    ],
)
def test_bad_flags_exit_2(tmp_path, args: list[str], message: str) -> None:
    result = subprocess.run(
        [str(AGENT), "sim", "module", "--state", str(tmp_path / "s.json"), *args],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and message in result.stderr


def test_garbage_state_file_exit_2(tmp_path) -> None:
    state = tmp_path / "s.json"
    state.write_text("{not json")
    result = subprocess.run(
        [str(AGENT), "sim", "module", "--state", str(state)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"module simulator state {state} is unreadable" in result.stderr


def test_hostile_bytes_to_the_simulator_do_not_kill_it(sim) -> None:
    import os

    import serial

    from drivers.framing import STX

    with serial.serial_for_url(sim.path, baudrate=115200, timeout=0.1) as raw:
        raw.write(os.urandom(2000))
        raw.write(bytes([STX, 0xFF, 0xFF]) + os.urandom(64))  # LEN 65535
        raw.write(bytes([STX, 0x00, 0x05, 0x01, 0x00]))  # half a frame, then nothing
        raw.flush()
    assert sim.process.poll() is None
    with SerialCardModule(sim.path) as module:
        assert module.key_status(0)["TMK"].present
    assert sim.say("status").startswith("ok")


def test_keypad_through_the_console(sim) -> None:
    """``pin DIGITS`` sets what the next cardholder types; the PIN never appears in ``status``."""
    from agent.wire.pin import pin_pan
    from drivers.module import Status

    with SerialCardModule(sim.path) as module:
        assert sim.say("pin 24680") == "ok pin 24680"
        assert sim.say("pin 12").startswith("error: pin: a PIN is 4 to 12 digits")
        assert sim.say("keypad 0.2") == "ok keypad 0.2"
        with pytest.raises(ModuleStatusError) as err:  # no PIK before a sign-in
            module.pin_block(0, pin_pan("6222021234567890123"), 30)
        assert err.value.status == Status.KEY_ABSENT
        assert sim.say("pin cancel") == "ok pin cancel"
        status = sim.say("status")
        assert '"keypad": {"delay": 0.2, "entries": 1}' in status
        assert "24680" not in status
