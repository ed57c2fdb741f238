"""``agent module check`` as a vendor or a technician runs it, a real process each time: against
the simulator (a process on a pty), a module that answers one command wrong (the simulator with
one answer corrupted, on a real pty), a production module whose keys must be left alone, and the
example out-of-tree driver installed with pip. Also the run's known answers, derived again from
the clear keys with the project's ciphers and with independent ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from Crypto.Cipher import DES3

from agent.sim.module import ModuleSimulator, ModuleState
from agent.sim.module_port import SimulatedModulePort
from agent.wire.mac import DES_FAMILY, SM4_FAMILY, mac_block
from agent.wire.pin import format0
from agent.wire.working_keys import issue_working_keys
from drivers.conformance.vectors import (
    CLEAR_KEYS,
    ENCRYPT_DATA,
    KNOWN_ANSWERS,
    MAB,
    PIN,
    PIN_PAN,
    TEST_TMK,
)
from drivers.framing import Frame
from drivers.module import Command, KeyFamily, MacAlgorithm
from tests import independent_sm4
from tests.processes import AGENT, AgentProcess, ModuleProcess, pay

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "module-driver"
FAULT_CASES = ("noisy line", "unplug and replug")
LINE_CASES = ("repeated SEQ", "noise and a damaged frame")


def check(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    """``agent module check`` with an empty configuration (whatever /etc holds)."""
    config = tmp_path / "empty.toml"
    config.touch()
    return subprocess.run(
        [AGENT, "module", "check", "--config", str(config), *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )  # fmt: skip


def outcomes(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    report = json.loads(result.stdout)
    return {case["name"]: (case["result"], case["detail"]) for case in report["cases"]}


# ------------------------------------------------------------------------- the known answers


@pytest.mark.parametrize("family", list(KNOWN_ANSWERS))
def test_known_answers_follow_from_the_clear_keys(family: KeyFamily) -> None:
    answers = KNOWN_ANSWERS[family]
    cipher = SM4_FAMILY if family is KeyFamily.SM4 else DES_FAMILY
    issued = issue_working_keys(TEST_TMK, answers.layout, CLEAR_KEYS)
    assert cipher.kcv(TEST_TMK) == answers.tmk_kcv
    assert issued.to_field62() == answers.field62
    assert {name: bytes.fromhex(kcv) for name, kcv in issued.kcvs().items()} == answers.kcvs
    assert mac_block(MAB, cipher.block) == answers.r
    assert cipher.mac(MAB, CLEAR_KEYS["MAK"]) == answers.mac
    assert cipher.mac_from_r(answers.r, CLEAR_KEYS["MAK"]) == answers.mac
    assert cipher.cipher(CLEAR_KEYS["TDK"]).encrypt(ENCRYPT_DATA) == answers.encrypted
    block = format0(PIN, PIN_PAN).ljust(cipher.block, b"\xff")
    assert cipher.cipher(CLEAR_KEYS["PIK"]).encrypt(block) == answers.pin_block


def _des(key: bytes, data: bytes) -> bytes:
    return DES3.new(key, DES3.MODE_ECB).encrypt(data)


def _des_cup_mac(mab: bytes, mak: bytes) -> bytes:
    """Section 4 written out again on pycryptodome's DES: R, its hex H, E1, E2."""
    padded = mab + bytes(-len(mab) % 8)
    r = bytes(8)
    for start in range(0, len(padded), 8):
        r = bytes(a ^ b for a, b in zip(r, padded[start : start + 8], strict=True))
    h = r.hex().upper().encode("ascii")
    e1 = _des(mak, h[:8])
    e2 = _des(mak, bytes(a ^ b for a, b in zip(e1, h[8:], strict=True)))
    return e2.hex().upper()[:8].encode("ascii")


def test_known_answers_hold_with_independent_ciphers() -> None:
    # format 0 by hand: 0, length 6, the PIN, F padding; XOR 0000 and the 12 PAN digits
    pin_block = bytes(
        a ^ b
        for a, b in zip(
            bytes.fromhex("06123456FFFFFFFF"), bytes.fromhex("0000" + PIN_PAN), strict=True
        )
    )
    ciphers = {
        KeyFamily.DES: (_des, _des_cup_mac, 8),
        KeyFamily.SM4: (independent_sm4.encrypt, independent_sm4.cup_mac, 16),
    }
    for family, (encrypt, cup_mac, block) in ciphers.items():
        answers = KNOWN_ANSWERS[family]
        assert encrypt(TEST_TMK, bytes(block))[:4] == answers.tmk_kcv
        expected62 = b"".join(
            encrypt(TEST_TMK, key) + encrypt(key, bytes(block))[:4] for key in CLEAR_KEYS.values()
        )
        assert answers.field62 == expected62
        assert cup_mac(MAB, CLEAR_KEYS["MAK"]) == answers.mac
        assert encrypt(CLEAR_KEYS["TDK"], ENCRYPT_DATA) == answers.encrypted
        padded = pin_block.ljust(block, b"\xff")
        assert encrypt(CLEAR_KEYS["PIK"], padded) == answers.pin_block


# ------------------------------------------------------------------------------- the simulator


def test_the_simulator_passes_on_a_pty(tmp_path) -> None:
    module = ModuleProcess(tmp_path)
    try:
        result = check(tmp_path, "--url", module.path, "--pin", "--json")
    finally:
        module.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    found = outcomes(result)
    for name in FAULT_CASES:
        assert found.pop(name) == (
            "skip",
            "needs a module that injects faults on request: the simulator (--sim)",
        )
    assert {result for result, _ in found.values()} == {"pass"}, found
    assert found["MAC 0x81 slot 0"] == ("pass", "343119A0 of R 0808080808262708")
    assert found["MAC 0x83 slot 1"][1].startswith("C116216A of R ")
    assert found["PIN_BLOCK slot 1"] == (
        "pass",
        f"PIN {PIN} at PAN digits {PIN_PAN}: A7D6E1EB1A36DF28CD3E7180DC3DF457",
    )
    assert found["TUSN ciphertext"][0] == "pass"
    report = json.loads(result.stdout)
    assert report["module"]["serial"] == "SIM0000000000001"
    assert (report["passed"], report["failed"], report["ok"]) == (len(found), 0, True)


def test_with_the_simulator_it_starts_every_case_runs(tmp_path) -> None:
    result = check(tmp_path, "--sim")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("agent module check: driver 'serial', module at /")
    assert lines[1] == "module SIM0000000000001, model POS-SIM-SM1, firmware sim-1.0"
    assert lines[-1].endswith(" passed, 0 failed, 0 skipped: no case failed")
    assert [line for line in lines if line.startswith("pass  unplug and replug")]
    assert [line for line in lines if line.startswith("pass  noisy line")]


def test_without_a_person_at_the_keypad_no_pin_is_asked(tmp_path) -> None:
    module = ModuleProcess(tmp_path)
    try:
        result = check(tmp_path, "--url", module.path, "--slot", "0", "--json")
    finally:
        module.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    found = outcomes(result)
    assert found["PIN_BLOCK slot 0"] == (
        "skip",
        f"needs a person at the module's keypad: run with --pin and type {PIN}",
    )
    assert not [name for name in found if name.endswith("slot 1")]


# ------------------------------------------------------------- modules that are not the simulator


@pytest.fixture
def module_on_a_pty(tmp_path) -> Iterator[Callable[..., tuple[ModuleState, str]]]:
    """``start(simulator_class, **state)``: a simulated module on a real pty, with the state
    given (keys, families) and the simulator class given (one answering something wrong)."""
    ports: list[SimulatedModulePort] = []

    def start(simulator: type[ModuleSimulator] = ModuleSimulator, **state: object):
        module_state = ModuleState.load_or_create(tmp_path / "state.json")
        for name, value in state.items():
            setattr(module_state, name, value)
        module_state.save()
        port = SimulatedModulePort(simulator(module_state))
        ports.append(port)
        return module_state, port.start_pty(tmp_path / "module")

    yield start
    for port in ports:
        port.stop()


def _key_status(slot: int, corrupt: Callable[[bytes], bytes]):
    def rewrite(request: Frame, data: bytes) -> bytes:
        wanted = request.cmd == Command.KEY_STATUS and request.data == bytes([slot])
        return corrupt(data) if wanted else data

    return rewrite


def _mac_from_r_of_sm4(request: Frame, data: bytes) -> bytes:
    if request.cmd == Command.MAC and request.data[1] == MacAlgorithm.SM4_FROM_R:
        return data[:-1] + (b"0" if data[-1:] != b"0" else b"1")
    return data


WRONG_ANSWERS = {
    "family of slot 1 said DES": (
        _key_status(1, lambda data: data[:-1] + b"\x00"),
        "KEY_STATUS slot 1",
        "slot 1's TMK has KCV 2677F46B, the documented SM4 test TMK's, but the family byte says "
        "DES (0x00); expected 0x01",
    ),
    "family byte 0x02": (
        _key_status(0, lambda data: data[:-1] + b"\x02"),
        "KEY_STATUS slot 0",
        "KEY_STATUS response names key family 0x02, expected 0x00 (DES/3DES) or 0x01 (SM4)",
    ),
    "a wrong SM4 MAC": (
        _mac_from_r_of_sm4,
        "MAC 0x83 slot 1",
        "MAC 0x83 of R 3132333435363738393A3B3C3D101030 is b'C1162160'; expected b'C116216A' "
        "(MAK KCV EC17D38D)",
    ),
}


@pytest.mark.parametrize("wrong", list(WRONG_ANSWERS))
def test_one_wrong_answer_fails_naming_the_case_and_what_was_wrong(
    module_on_a_pty, tmp_path, wrong
) -> None:
    rewrite, case, reason = WRONG_ANSWERS[wrong]

    class OneWrongAnswer(ModuleSimulator):
        def handle(self, request: Frame) -> Frame:
            response = super().handle(request)
            return Frame(response.seq, response.cmd, rewrite(request, response.data))

    _, path = module_on_a_pty(OneWrongAnswer)
    result = check(tmp_path, "--url", path)
    assert result.returncode == 1, result.stdout + result.stderr
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 1, result.stdout
    name, detail = failures[0].removeprefix("FAIL  ").split("  ", 1)
    assert (name, detail.strip()) == (case, reason)
    summary = result.stdout.splitlines()[-1]
    assert ", 1 failed, " in summary and summary.endswith("the module or its driver answered wrong")


def test_a_production_module_keeps_its_keys(module_on_a_pty, tmp_path) -> None:
    """Other TMKs than the documented ones: the cases that load keys are skipped and nothing is
    loaded, unless --test-keys says the module must be a test module."""
    production = {0: {"TMK": bytes(range(16))}, 1: {"TMK": bytes(range(16, 32))}}
    state, path = module_on_a_pty(slots={slot: dict(keys) for slot, keys in production.items()})
    result = check(tmp_path, "--url", path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    found = outcomes(result)
    outcome, why = found["test TMK slot 0"]
    assert outcome == "skip"
    assert why.startswith("slot 0's DES TMK has KCV ")
    assert why.endswith(
        ", not the documented test TMK's 08D7B4FB: the cases that load keys run only under the "
        "documented test TMK, and leave this slot alone (--test-keys makes this a failure)"
    )
    for name in ("LOAD_WORKING_KEYS slot 0", "MAC 0x81 slot 0", "ENCRYPT slot 1"):
        assert found[name][0] == "skip", name
    assert found["TUSN ciphertext"] == (
        "skip",
        "the module holds no documented test TMK, so no test TUSN key either",
    )
    assert ModuleState.load_or_create(state.path).slots == production

    strict = check(tmp_path, "--url", path, "--test-keys", "--json")
    assert strict.returncode == 1
    outcome, why = outcomes(strict)["test TMK slot 1"]
    assert outcome == "fail"
    assert why.endswith("; --test-keys expects the documented test TMK")


# ------------------------------------------------------------------ drivers and their loading


@pytest.fixture(scope="module")
def example_driver(tmp_path_factory) -> str:
    """The example out-of-tree driver installed by pip as a vendor's package is: its folder,
    for PYTHONPATH. Built from a copy, so the build leaves nothing in the source tree."""
    work = tmp_path_factory.mktemp("example-driver")
    source = shutil.copytree(EXAMPLE, work / "source")
    site = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--target", str(site), str(source)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return str(site)


def test_the_example_driver_passes(example_driver, tmp_path) -> None:
    module = ModuleProcess(tmp_path)
    try:
        result = check(
            tmp_path, "--driver", "example-sdk", "--url", module.path, "--pin", "--json",
            env={"PYTHONPATH": example_driver},
        )  # fmt: skip
    finally:
        module.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    found = outcomes(result)
    assert json.loads(result.stdout)["driver"] == "example-sdk"
    for name in LINE_CASES:
        outcome, why = found.pop(name)
        assert outcome == "skip"
        assert why.startswith(
            "the driver (ExampleSdkModule) does not put frames on the section 5 line itself"
        )
    for name in FAULT_CASES:
        assert found.pop(name)[0] == "skip"
    assert {result for result, _ in found.values()} == {"pass"}, found


def test_the_example_driver_survives_noise_and_unplug(example_driver, tmp_path) -> None:
    result = check(tmp_path, "--driver", "example-sdk", "--sim", "--json",
                   env={"PYTHONPATH": example_driver})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    found = outcomes(result)
    assert found["noisy line"][0] == "pass"
    assert found["unplug and replug"][0] == "pass"
    assert "(vendor SDK, code -1: device not reachable)" in found["unplug and replug"][1]


def test_the_service_sells_through_the_example_driver(simulators, example_driver, tmp_path):
    _, _, config = simulators
    text = config.read_text()
    config.write_text(text.replace("[module]\n", '[module]\ndriver = "example-sdk"\n', 1))
    assert 'driver = "example-sdk"' in config.read_text()
    agent = AgentProcess(
        config, tmp_path / "agent.sock", tmp_path / "agent.log", {"PYTHONPATH": example_driver}
    )
    try:
        agent.wait_ready()
        assert pay(tmp_path / "agent.sock").text(39) == "00"
    finally:
        assert agent.stop() == 0


def test_a_driver_that_is_not_there_is_one_line_and_exit_2(tmp_path) -> None:
    result = check(tmp_path, "--driver", "nope", "--url", "/dev/null")
    assert result.returncode == 2
    assert result.stderr.startswith("agent module: no module driver 'nope': installed drivers")
    assert result.stdout == "" and "Traceback" not in result.stderr

    config = tmp_path / "agent.toml"
    config.write_text('[module]\ndriver = "nope"\n')
    run = subprocess.run(
        [AGENT, "run", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert f"{config}: module.driver = 'nope': no module driver 'nope'" in run.stderr
    assert "Traceback" not in run.stderr
