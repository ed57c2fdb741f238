"""Wire-layer speed: encode and decode microseconds per message for a typical 0200 and 0210.

Encode is message -> complete host frame (pyiso8583 encoding, field 64 included, length, TPDU,
header); decode is host frame -> Message with every field validated. The MAC's public part (R) is
timed on its own; its keyed part runs in the card module. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from report import print_figures

from agent.wire.builders import Card, Terminal, purchase_request, response_to
from agent.wire.frame import Header, Tpdu, decode_frame, host_frame
from agent.wire.mac import mab, mac_block
from agent.wire.message import Message, encode_message

TARGET_US = 100.0


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
    worst = max(max(r["encode_us"], r["decode_us"]) for r in results.values())
    print_figures(
        "wire",
        {"messages": results, "target_us": TARGET_US, "within_target": worst < TARGET_US},
    )


if __name__ == "__main__":
    main()
