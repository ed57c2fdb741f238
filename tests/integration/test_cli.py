"""The ``agent`` console script, run as a real subprocess as a technician would run it."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent import __version__
from agent.cli import main
from agent.demo import ROTATED_TMK
from agent.wire.builders import Card, Terminal, purchase_request
from agent.wire.frame import Header, Tpdu, host_frame, with_length
from agent.wire.mac import DES_FAMILY, encode_with_mac
from agent.wire.message import Message, encode_message

AGENT = Path(sys.executable).with_name("agent")
TERMINAL = Terminal("10000001", "898100012340001")
PAN = "6217001234567890123"
TRACK2 = PAN + "=28121010000000000"
PIN_BLOCK = bytes.fromhex("A1B2C3D4E5F60718")
STAND_IN_MAC = b"MACMACMA"


def agent(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENT), *args], input=stdin, capture_output=True, text=True, timeout=60, check=False,
        env=env, encoding="utf-8",
    )  # fmt: skip


def locale(lang: str, **more: str) -> dict[str, str]:
    """This environment with the locale ``LANG=lang`` alone (no LC_ALL, LC_MESSAGES)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LC_MESSAGES")}
    environ.pop("PYTHONIOENCODING", None)
    return environ | {"LANG": lang} | more


def purchase_frame(pan: str = PAN, track2: str = TRACK2, pin: bytes = PIN_BLOCK) -> bytes:
    card = Card(pan=pan, expiry="2812", track2=track2, pin_block=pin)
    message = purchase_request(TERMINAL, stan=5, batch=1, amount_fen=1234, card=card)
    # a fixed, non-numeric stand-in MAC: it cannot look like a PAN or a PIN block
    return host_frame(encode_with_mac(message, lambda r: STAND_IN_MAC), Tpdu(), Header())


def test_version_and_help() -> None:
    result = agent("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"pos-agent {__version__}")
    result = agent("--help")
    assert result.returncode == 0
    for command in ("explain", "decode", "demo"):
        assert command in result.stdout


def test_no_command_prints_help_and_exits_2() -> None:
    result = agent(env=locale("C.UTF-8"))
    assert result.returncode == 2 and "usage: agent" in result.stdout
    result = agent(env=locale("zh_CN.UTF-8"))
    assert result.returncode == 2 and result.stdout.startswith("用法: agent")


@pytest.mark.parametrize(
    ("command", "chinese", "english"),
    [
        ((), "自检：终端参数、时钟、网络", "check the terminal: provisioning, clock"),
        (("status",), "语言（默认：跟随系统语言环境 locale）", "language (default: the locale's)"),
        (("sim", "module"), "加密模块模拟器", "Card module simulator"),
        (("fleet", "send"), "终端加密模块的序列号", "the terminal's card module serial"),
        (("module", "check"), "要求模块装有文档所列的测试密钥", "the documented test keys"),
    ],
)
def test_help_follows_the_locale(command: tuple[str, ...], chinese: str, english: str) -> None:
    """issue 25: ``--help`` is Chinese under a Chinese locale on a console that shows it,
    argparse's own words included, and English otherwise (250 columns: no help is wrapped)."""
    zh = agent(*command, "--help", env=locale("zh_CN.UTF-8", COLUMNS="250"))
    assert zh.returncode == 0, zh.stderr
    assert zh.stdout.startswith("用法: agent") and "\n选项:\n" in zh.stdout
    assert "  -h, --help" in zh.stdout and "显示本帮助信息并退出" in zh.stdout
    assert chinese in zh.stdout
    assert "usage:" not in zh.stdout and english not in zh.stdout
    for environ in (
        locale("C.UTF-8", COLUMNS="250"),
        locale("zh_CN.UTF-8", LC_ALL="C.UTF-8", COLUMNS="250"),  # LC_ALL comes first
        locale("zh_CN.UTF-8", PYTHONIOENCODING="ascii", COLUMNS="250"),  # no Chinese shown
    ):
        en = agent(*command, "--help", env=environ)
        assert en.returncode == 0, en.stderr
        assert en.stdout.startswith("usage: agent") and "\noptions:\n" in en.stdout
        assert "show this help message and exit" in en.stdout
        assert english in en.stdout
        assert "用法" not in en.stdout and chinese not in en.stdout


def test_explain_97_human() -> None:
    result = agent("explain", "97")
    assert result.returncode == 0
    assert "未登记" in result.stdout and "terminal not registered" in result.stdout
    assert "terminal-config" in result.stdout


def test_explain_97_json() -> None:
    result = agent("explain", "97", "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["category"] == "terminal-config"
    assert "未登记" in data["zh"]
    assert data["known"] is True and data["action"]["en"] and data["action"]["zh"]


def test_explain_unknown_code_is_shown_as_unknown() -> None:
    data = json.loads(agent("explain", "Q7", "--json").stdout)
    assert (data["category"], data["known"]) == ("unknown", False)


def test_explain_a_registration_finding() -> None:
    """What the self-check and a refused request name (DESIGN.md section 17), explained."""
    result = agent("explain", "registration.tusn-refused")
    assert result.returncode == 0
    assert "reported (报备) to the acquirer" in result.stdout and "报备" in result.stdout
    data = json.loads(agent("explain", "registration.a2-missing", "--json").stdout)
    assert data["finding"] == "registration.a2-missing"
    assert 'registration.tusn = "module"' in data["action"]["en"] and data["meaning"]["zh"]
    unknown = agent("explain", "registration.nothing")
    assert unknown.returncode == 2 and "registration.tusn-refused" in unknown.stderr


@pytest.mark.parametrize("code", ["9", "970", ""])
def test_explain_rejects_what_is_not_a_code(code: str) -> None:
    result = agent("explain", code)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("agent explain: a response code is 2 characters")


def test_decode_host_frame_is_masked() -> None:
    result = agent("decode", purchase_frame().hex())
    assert result.returncode == 0, result.stderr
    assert "MTI      0200" in result.stdout
    assert "621700*********0123" in result.stdout
    assert "<track 2 removed" in result.stdout and "<PIN block removed" in result.stdout
    assert PAN not in result.stdout and PIN_BLOCK.hex().upper() not in result.stdout


def test_decode_json_from_stdin_with_spaces() -> None:
    spaced = " ".join(purchase_frame().hex()[i : i + 8] for i in range(0, 200, 8))
    spaced += purchase_frame().hex()[200:] + "\n"
    result = agent("decode", "-", "--json", stdin=spaced)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["layout"] == "host" and data["mti"] == "0200"
    assert data["tpdu"]["destination_nii"] == "0003"
    assert data["header"]["processing_requirement"] == 0
    by_number = {f["number"]: f for f in data["fields"]}
    assert by_number[2]["value"] == "621700*********0123"
    assert by_number[4] == {"number": 4, "name": "amount (fen)", "format": "n12",
                            "value": "000000001234"}  # fmt: skip


def test_decode_response_explains_39_and_header() -> None:
    message = Message("0210", {11: "000005", 39: "97", 41: "10000001"})
    frame = host_frame(encode_message(message), Tpdu(), Header(processing_requirement=3))
    result = agent("decode", frame.hex())
    assert (
        "未登记" in result.stdout
        and "processing requirement 3 (sign in again; agent: sign-in)" in result.stdout
    )


def test_decode_app_frame_and_forced_layout() -> None:
    app = with_length(encode_message(Message("0820", {11: "000001", 60: "00000001301"})))
    result = agent("decode", app.hex(), "--json")
    assert json.loads(result.stdout)["layout"] == "app"
    assert agent("decode", app.hex(), "--frame", "bare").returncode == 2


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_decode_odd_hex() -> None:
    line = _one_error_line(agent("decode", "02000"))
    assert line == "agent decode: input: odd number of hex digits (5); bytes need two each\n"


def test_decode_non_hex() -> None:
    line = _one_error_line(agent("decode", "0200zz"))
    assert "character 5 ('z') is not a hex digit" in line


def test_decode_truncated_field_names_offset_and_field() -> None:
    frame = purchase_frame()
    bare = frame[13:]
    # field 2 starts right after MTI (2) and bitmap (8): its LL prefix at 10, digits from 11
    line = _one_error_line(agent("decode", bare[:15].hex(), "--frame", "bare"))
    assert line.startswith("agent decode: at byte 11, field 2 (primary account number):")


def test_decode_bad_length_prefix() -> None:
    frame = purchase_frame()
    line = _one_error_line(agent("decode", frame[:-1].hex()))
    assert line.startswith("agent decode: at byte 0, length: length prefix says")


def test_decode_bitmap_with_undefined_field() -> None:
    # bit 5 (field 5, not in the profile) set in the first bitmap byte
    line = _one_error_line(agent("decode", "02000800000000000000"))
    assert line == (
        "agent decode: at byte 2, bitmap: bitmap asks for field 5, "
        "which wire profile 'cup' does not define\n"
    )


QR_CAPTURE = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "cup-captures.json").read_text("utf-8")
)["cases"][0]
# The same captured frame as an IC purchase: entry mode 071 (contactless chip, PIN) as 07 10.
IC_FRAME = QR_CAPTURE["frame"].replace("0000020300", "0000020710", 1)


def _field(decoded: dict, number: int) -> dict:
    return next(f for f in decoded["fields"] if f["number"] == number)


def test_decode_a_captured_frame_of_a_real_terminal() -> None:
    result = agent("decode", "--json", QR_CAPTURE["frame"])
    assert result.returncode == 0, result.stderr
    decoded = json.loads(result.stdout)
    assert _field(decoded, 22)["value"] == "030"
    assert _field(decoded, 60)["value"] == "2600000100060000000"  # 19 digits
    assert decoded["header"]["sub_version"] == "320072"
    ic = json.loads(agent("decode", "--json", IC_FRAME).stdout)
    assert _field(ic, 22)["value"] == "071"
    human = agent("decode", IC_FRAME).stdout
    assert " 22  entry mode" in human and "071" in human and "contactless" in human


def test_decode_with_an_acquirer_profile(tmp_path) -> None:
    profile = tmp_path / "old-acquirer.toml"
    profile.write_text('[fields.60]\nmax = 17\n[fields.22]\njustify = "right"\n')
    result = agent("decode", "--profile", str(profile), QR_CAPTURE["frame"])
    assert result.returncode == 2
    assert result.stderr.startswith("agent decode: at byte 64, field 60")
    assert "19 nibbles, larger than maximum 17" in result.stderr
    profile.write_text("[fields.60]\nmax = 5000\n")
    result = agent("decode", "--profile", str(profile), QR_CAPTURE["frame"])
    assert result.returncode == 2
    assert f"--profile: {profile}: field 60: max = 5000" in result.stderr


def test_explain_processing_requirements() -> None:
    result = agent("explain", "--requirement", "5")
    assert result.returncode == 0
    assert "download IC parameters" in result.stdout and "0820/382" in result.stdout
    table = json.loads(agent("explain", "--requirement", "all", "--json").stdout)
    assert [row["requirement"] for row in table] == list(range(10))
    assert table[3]["agent_does"] == "sign-in"
    unknown = json.loads(agent("explain", "--requirement", "12", "--json").stdout)
    assert unknown["known"] is False
    assert agent("explain", "--requirement", "16").returncode == 2
    assert agent("explain").returncode == 2


def test_explain_77_is_a_session_code() -> None:
    rc = json.loads(agent("explain", "77", "--json").stdout)
    assert rc["category"] == "session" and "batch" in rc["action"]["en"]


def test_demo_tells_the_whole_story() -> None:
    result = agent("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    tusn = "00009902SIM0000000000001"  # the module simulator's
    rotated_kcv = DES_FAMILY.kcv(ROTATED_TMK).hex().upper()  # the acquirer's new master key
    steps = ["1. The agent signs in", "2. A purchase", "2a. A purchase of 88.00 CNY with a PIN",
             "the host checked the PIN under its PIK: 1", "2b. The merchant voids",
             "the agent named the original", "3. The host loses", "recovered: 00",
             "4. The acquirer cancels", "UNREGISTERED", "5. The journal",
             # the TUSN chapter: the request's refusal, not the terminal's
             "6. The acquirer checks the terminal hardware serial number", "registered again",
             f"it has not reported TUSN {tusn}", "6a. A purchase of 23.45 CNY",
             "answer to the app: 97",
             f"AGENT registration.tusn-refused: the acquirer refused 97 for TUSN {tusn}: have "
             "it reported to the acquirer; the terminal itself is registered",
             "{'tusn-not-reported': 2}", "the terminal stays registered",
             "{'registration.tusn-refused': 1}", f"终端硬件序列号 {tusn} 未报备",
             "a balance inquiry (it carries no A2) is still answered: 00",
             "6b. The technician's self-check",
             "registration (终端报备): fail, finding registration.tusn-refused",
             "1 request(s) refused for field 59", "see the cause above",
             f"6c. The acquirer reports TUSN {tusn}", "answer: 00",
             "6d. The journal of this chapter", "retried after sign-in: 97",
             "purchase refused with 97 (terminal not registered (terminal id not found)), the "
             "terminal stays registered (registration.tusn-refused)",
             "23.45 CNY card 621700*********0123: completed, 00",
             # the master-key chapter: the module's TMK is not the acquirer's
             "7. A module whose master key (TMK, 主密钥) is not the acquirer's",
             f"the acquirer rotates the terminal's master key: KCV {rotated_kcv}",
             "7a. A purchase of 34.56 CNY", "answer to the app: 00",
             f"the module's master key now: KCV {rotated_kcv}",
             "0800/401 answered by the acquirer: 1", "the terminal is registered",
             "7b. The journal of this chapter", "34.56 CNY card 621700*********0123: completed, 97",
             "remedy sign-in failed: sign-in failed: card module refused LOAD_WORKING_KEYS: KCV "
             "mismatch", f"master-key download (0800-401): loaded, KCV {rotated_kcv}",
             f"remedy tmk-download done: master key (KCV {rotated_kcv}) loaded (0800-401)",
             "retried after tmk-download: 00", "recovered: 00",
             "The story completed"]  # fmt: skip
    at = 0
    for step in steps:  # each after the one before it
        assert step in out[at:], f"{step!r} is missing or out of order"
        at = out.index(step, at) + len(step)
    assert "终端 10000001（商户 898100012340001）暂停收款" in out and "(support: 95516)" in out
    assert "6217001234567890123" not in out and "621700*********0123" in out
    assert ROTATED_TMK.hex().upper() not in out.upper()  # its KCV only, never the key
    assert not result.stderr


def _run_in_process(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        main(list(args))
    return out.getvalue() + err.getvalue()


@settings(max_examples=150)
@given(
    pan=st.text("0123456789", min_size=13, max_size=19),
    discretionary=st.text("0123456789", min_size=4, max_size=15),
    pin=st.binary(min_size=8, max_size=8).filter(lambda b: b != STAND_IN_MAC),
    cut=st.integers(0, 40),
)
def test_decode_never_prints_pan_track_or_pin(
    pan: str, discretionary: str, pin: bytes, cut: int
) -> None:
    # A PAN that happens to be part of a value printed legitimately (the MID, the amount...)
    # proves nothing either way.
    shown = " ".join(str(v) for v in (TERMINAL.mid, TERMINAL.tid, "000000001234", "22000001000"))
    assume(pan not in shown)
    track2 = (pan + "=" + discretionary)[:37]
    frame = purchase_frame(pan, track2, pin)
    for data in (frame, frame[: len(frame) - cut]):
        for fmt in ((), ("--json",)):
            printed = _run_in_process("decode", data.hex(), *fmt)
            assert pan not in printed
            assert track2 not in printed and track2.replace("=", "D") not in printed
            assert pin.hex().upper() not in printed and pin.hex() not in printed


def test_config_check_shows_what_is_in_effect(tmp_path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[terminal]\ntid = "10000001"\nmid = "898100012340001"\n'
                      '[host]\nprimary = "10.0.0.5:5000"\n')  # fmt: skip
    result = agent("config", "check", "--config", str(config))
    assert result.returncode == 0
    assert f"configuration {config}: valid" in result.stdout
    assert "[terminal] tid=10000001, mid=898100012340001" in result.stdout
    assert "[wire] tpdu_destination=0003" in result.stdout
    config.write_text('[host]\nprimary = "10.0.0.5"\n')
    result = agent("config", "check", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}: host.primary = '10.0.0.5': expected HOST:PORT" in result.stderr
