"""Wire-layer speed: encode and decode microseconds per message for a typical 0200 and 0210.

Encode is message -> complete host frame (pyiso8583 encoding, field 64 included, length, TPDU,
header); decode is host frame -> Message with every field validated, under the built-in CUP
profile. The captured QR purchase of ``tests/vectors`` is timed too (a real terminal's frame, with
a 19-digit field 60 and TLVs in 62), and a 0200 under an acquirer profile that overrides rows. The
MAC's public part (R) is timed on its own; its keyed part runs in the card module. Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from report import print_figures

from agent.wire.builders import Card, Terminal, purchase_request, response_to
from agent.wire.frame import Header, Tpdu, decode_frame, host_frame
from agent.wire.mac import mab, mac_block
from agent.wire.message import Message, encode_message
from agent.wire.profile import CUP

TARGET_US = 100.0
CAPTURES = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "cup-captures.json"
# What an acquirer's profile file typically changes: a shorter 60, 22 right-justified, GB2312.
OVERRIDES = {60: {"max": 20}, 22: {"justify": "right"}, 63: {"charset": "gb2312"}}


def per_call_us(fn: Callable[[], object], repeat: int = 7, number: int = 2000) -> float:
    """Median over ``repeat`` runs of the mean time of one call, in microseconds."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number * 1e6)
    return round(statistics.median(runs), 2)


def typical_messages() -> dict[str, Message]:
    card = Card(
        pan="6217001234567890123",
        expiry="2812",
        track2="6217001234567890123=28121010000000000",
        pin_block=bytes(8),
        icc_data=bytes.fromhex("9F2608AABBCCDDEEFF00119F2701809F101307010103A0A802010A0100000000"),
        entry_mode="051",
        sequence_number="001",
    )
    purchase = purchase_request(
        Terminal("10000001", "898100012340001"), stan=1, batch=1, amount_fen=1234, card=card
    )
    approved = response_to(
        purchase,
        "00",
        {12: "101112", 13: "1125", 15: "1125", 37: "123456789012", 38: "A1B2C3",
         44: "0102030405 0607", 63: "CUP"},
    )  # fmt: skip
    return {"0200": purchase, "0210": approved}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke run)")
    args = parser.parse_args()
    timing = {"repeat": 3, "number": 100} if args.quick else {}
    tpdu, header = Tpdu(), Header()
    results: dict[str, dict[str, float]] = {}
    for mti, message in typical_messages().items():
        frame = host_frame(encode_message(message), tpdu, header)
        results[mti] = {
            "bytes": len(frame),
            "encode_us": per_call_us(
                lambda m=message: host_frame(encode_message(m), tpdu, header), **timing
            ),
            "decode_us": per_call_us(lambda f=frame: decode_frame(f), **timing),
            "mac_block_us": per_call_us(lambda f=frame: mac_block(mab(f[13:])), **timing),
        }
    captured = bytes.fromhex(json.loads(CAPTURES.read_text("utf-8"))["cases"][0]["frame"])
    frame = decode_frame(captured)
    assert frame.tpdu is not None and frame.header is not None
    capture_tpdu, capture_header = frame.tpdu, frame.header
    # built anew: a decoded message would pass every field on in the bytes it came in
    fresh = Message(frame.message.mti, dict(frame.message.fields))
    results["captured QR 0200"] = {
        "bytes": len(captured),
        "encode_us": per_call_us(
            lambda m=fresh: host_frame(encode_message(m), capture_tpdu, capture_header),
            **timing,
        ),
        "decode_us": per_call_us(lambda: decode_frame(captured), **timing),
    }
    acquirer = CUP.with_overrides(OVERRIDES, "acquirer")
    purchase = typical_messages()["0200"]
    purchase_frame = host_frame(encode_message(purchase, acquirer), tpdu, header)
    results["0200, acquirer profile"] = {
        "bytes": len(purchase_frame),
        "encode_us": per_call_us(
            lambda: host_frame(encode_message(purchase, acquirer), tpdu, header), **timing
        ),
        "decode_us": per_call_us(lambda: decode_frame(purchase_frame, None, acquirer), **timing),
    }
    # the host's 0210 as the agent passes it on: decoded, field 64 gone, the app's STAN in 11;
    # the other fields go out in the bytes they came in (agent.wire.message.Wire)
    answer = decode_frame(host_frame(encode_message(typical_messages()["0210"]), tpdu, header))
    for_the_app = Message(answer.message.mti, dict(answer.message.fields), answer.message.wire)
    for_the_app.fields.pop(64, None)
    for_the_app.fields[11] = "000777"
    results["0210 for the app"] = {
        "bytes": len(encode_message(for_the_app)),
        "encode_us": per_call_us(lambda: encode_message(for_the_app), **timing),
    }
    worst = max(max(r["encode_us"], r.get("decode_us", 0.0)) for r in results.values())
    print_figures(
        "wire",
        {"messages": results, "target_us": TARGET_US, "within_target": worst < TARGET_US},
    )


if __name__ == "__main__":
    main()
