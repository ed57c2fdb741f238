"""Field 59 in ``agent decode`` and the journal: its usages named, masked (DESIGN.md section 4)."""

import json
import sqlite3
from contextlib import closing

import pytest

from agent.cli import main
from agent.journal import Journal
from agent.wire.describe import describe_field59, describe_frame, render_frame
from agent.wire.field59 import build_a2, build_a5, with_usage
from agent.wire.frame import Header, Tpdu, decode_frame, host_frame
from agent.wire.message import Message, encode_message

VOUCHER = b"20240517153012345678"  # the host's QR payment voucher number
SM4_PIN_BLOCK = bytes.fromhex("8899AABBCCDDEEFF0011223344556677")
A2 = build_a2("02", "0000020254004318", "000052", "D60AF15D", "1.0.0")


def qr_purchase_answer() -> bytes:
    """A host's 0210 to a QR-code purchase: TPDU (source and destination swapped) + header +
    message, with field 59 = A4 + 020 + the voucher."""
    answer = Message(
        "0210",
        {
            3: "000000",
            4: "000000001234",
            11: "000002",
            12: "153012",
            13: "0517",
            25: "00",
            37: "240517153012",
            39: "00",
            41: "00000001",
            42: "898100012340001",
            49: "156",
            59: b"A4" + b"020" + VOUCHER,
            60: "22000001000",
            64: b"3A4F1C2B",
        },
    )
    return host_frame(encode_message(answer), Tpdu(0x0000, 0x0003), Header(software_version=0x32))


def decode_cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["decode", *args]) == 0
    out, err = capsys.readouterr()
    assert not err
    return out


def test_the_frame_carries_the_usage_as_written() -> None:
    frame = qr_purchase_answer()
    assert b"\x00\x25" + b"A4020" + VOUCHER in frame  # LLL 025 in BCD, then the usage
    assert decode_frame(frame).message[59] == b"A4020" + VOUCHER


def test_agent_decode_shows_the_voucher_usage(capsys: pytest.CaptureFixture[str]) -> None:
    out = decode_cli(capsys, qr_purchase_answer().hex().upper())
    lines = out.splitlines()
    [line] = [line for line in lines if line.startswith("  59  ")]
    assert line.split()[-1] == f"A4={VOUCHER.decode()}"
    assert "custom data (usages)" in line and "b..999 LLL" in line
    usage = lines[lines.index(line) + 1]
    assert usage == f"      A4  QR payment voucher   20 bytes  {VOUCHER.decode()}"
    assert lines[lines.index(line) + 2].startswith("  60  ")


def test_agent_decode_json_shows_the_voucher_usage(capsys: pytest.CaptureFixture[str]) -> None:
    decoded = json.loads(decode_cli(capsys, "--json", qr_purchase_answer().hex()))
    [field] = [f for f in decoded["fields"] if f["number"] == 59]
    assert field == {
        "number": 59,
        "name": "custom data (usages)",
        "format": "b..999 LLL",
        "value": f"A4={VOUCHER.decode()}",
        "usages": [
            {"tag": "A4", "name": "QR payment voucher", "length": 20, "value": VOUCHER.decode()}
        ],
    }
    assert decoded["mti"] == "0210"


def sm4_purchase() -> Message:
    a5 = build_a5({"longitude": "121.4737", "latitude": "31.2304", "coordinate_system": "GCJ02"})
    field = with_usage(b"A1016" + SM4_PIN_BLOCK, "A2", A2)
    return Message(
        "0200",
        {
            2: "6217001234567890123",
            3: "000000",
            4: "000000001234",
            11: "000005",
            22: "021",
            25: "00",
            26: "12",
            52: bytes(8),
            53: "2300000000000000",
            59: with_usage(field, "A5", a5),
            60: "22000001000",
        },
    )


def test_describe_names_usages_and_sub_usages_and_removes_the_pin_block() -> None:
    frame = decode_frame(host_frame(encode_message(sm4_purchase()), Tpdu(), Header()))
    [field] = [f for f in describe_frame(frame)["fields"] if f["number"] == 59]
    a1, a2, a5 = field["usages"]
    assert a1 == {
        "tag": "A1",
        "name": "SM4 PIN block",
        "length": 16,
        "value": "<PIN block removed, 16 bytes>",
    }
    assert (a2["name"], a2["length"]) == ("terminal hardware serial number", 65)
    assert [(s["tag"], s["name"], s["value"]) for s in a2["sub_usages"]] == [
        ("01", "device type", "02"),
        ("02", "TUSN", "0000020254004318"),
        ("03", "random factor", "**0052"),
        ("04", "ciphertext", "D60AF15D"),
        ("05", "application version", "1.0.0   "),
    ]
    assert a2["sub_usages"][0]["note"] == "traditional POS"
    assert "problem" not in a2
    assert [(s["name"], s["value"]) for s in a5["sub_usages"]] == [
        ("longitude", "121.4737"),
        ("latitude", "31.2304"),
        ("coordinate system", "GCJ02"),
    ]
    text = render_frame(frame)
    assert "      A1  SM4 PIN block" in text and "<PIN block removed, 16 bytes>" in text
    assert "          01  device type          02  (traditional POS)" in text
    assert '          05  application version  "1.0.0   "' in text
    assert "          05  coordinate system  GCJ02" in text
    for shown in (text, json.dumps(describe_frame(frame))):
        assert SM4_PIN_BLOCK.hex().upper() not in shown.upper()
        assert "000052" not in shown  # the random factor: PAN digits the PAN mask hides


def test_describe_says_what_is_wrong_with_an_a2() -> None:
    broken = b"A2" + b"030" + b"010020702005T000104008d60af15d"
    [a2] = describe_field59(broken)["usages"]
    assert [s["tag"] for s in a2["sub_usages"]] == ["01", "02", "04"]
    assert a2["problem"] == (
        "A2 has no sub-usage 03 (random factor); A2 sub-usage 01 (device type) 07 is not a CUP "
        "device type (01-06, 08-13); A2 TUSN 'T0001' does not begin with 6 manufacturer and 2 "
        "device-type digits; A2 sub-usage 04 (ciphertext) d60af15d has lower-case hex digits; "
        "acquirers compare the upper-case string"
    )
    [a2] = describe_field59(b"A2" + b"007" + b"0100502")["usages"]
    assert a2 == {
        "tag": "A2",
        "name": "terminal hardware serial number",
        "length": 7,
        "value": "<A2 that does not parse removed, 7 bytes>",
        "problem": "at byte 2 of A2: sub-usage 01: length 005 runs past the end of A2 "
        "(2 bytes left)",
    }


def test_a_field59_that_does_not_parse_is_described_without_its_bytes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    message = Message("0200", {3: "000000", 59: b"A1017" + SM4_PIN_BLOCK})
    out = decode_cli(capsys, encode_message(message).hex())
    [line] = [line for line in out.splitlines() if line.startswith("  59  ")]
    assert line.endswith(
        "<field 59 that does not parse as usages removed, 21 bytes>  (not a run of usages: at "
        "byte 2: usage A1: length 017 runs past the end of the field (16 bytes left))"
    )
    assert SM4_PIN_BLOCK.hex().upper() not in out.upper()


def test_the_journal_keeps_field59_masked(tmp_path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    transaction = journal.begin(sm4_purchase(), financial=True)
    journal.finish(transaction, "completed", Message("0210", {11: "000005", 39: "00"}))
    journal.close()
    with closing(sqlite3.connect(tmp_path / "journal.sqlite3")) as db:
        [(request, template)] = db.execute(
            "SELECT request, reversal_template FROM transactions"
        ).fetchall()
    shown = json.loads(request)["fields"]["59"]
    assert shown.startswith("A1=<PIN block removed, 16 bytes> A2=[01=02 02=0000020254004318")
    assert SM4_PIN_BLOCK.hex() not in request.lower()
    assert "59" not in json.loads(template)  # a reversal carries no 59 (DESIGN.md section 4)
