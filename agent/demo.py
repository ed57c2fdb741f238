"""``agent demo``: what the agent does, shown on built-in examples with no configuration.

It builds the frames a terminal exchanges around a 97 (sign-in, the keys that come back, a purchase
with its MAC, the host's 97 asking for a new sign-in), decodes each as a technician would see it,
and explains the 97.
"""

from __future__ import annotations

import os

from agent.wire import codes
from agent.wire.builders import Card, Terminal, purchase_request, response_to, signin_request
from agent.wire.describe import render_frame
from agent.wire.frame import Header, Tpdu, decode_frame, host_frame
from agent.wire.mac import DesKey, cup_ecb_mac, encode_with_mac, mac_matches
from agent.wire.message import encode_message
from agent.wire.working_keys import issue_working_keys, parse_field62

# Test keys of the demo only; real keys never leave the card module.
DEMO_TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
DEMO_TERMINAL = Terminal(tid="10000001", mid="898100012340001")
DEMO_CARD = Card(
    pan="6217001234567890123",
    expiry="2812",
    track2="6217001234567890123=28121010000000000",
    pin_block=bytes.fromhex("1A2B3C4D5E6F7081"),
)


def _section(title: str) -> None:
    print(f"\n== {title} ==")


def _show(label: str, frame_bytes: bytes) -> None:
    print(f"{label}: {len(frame_bytes)} bytes on the wire")
    print(render_frame(decode_frame(frame_bytes)))


def run_demo() -> int:
    tpdu, header = Tpdu(), Header()

    _section("1. sign-in 0800 (double-length keys, scheme 003)")
    signin = signin_request(DEMO_TERMINAL, stan=1, batch=1, scheme="003")
    _show("terminal -> host", host_frame(encode_message(signin), tpdu, header))

    _section("2. the host answers 0810 with working keys under the TMK (field 62)")
    clear = {"PIK": os.urandom(16), "MAK": os.urandom(16)}
    issued = issue_working_keys(DEMO_TMK, "003", clear)
    reply = response_to(signin, "00", {62: issued.to_field62()})
    reply_frame = host_frame(encode_message(reply), tpdu.swapped(), header)
    _show("host -> terminal", reply_frame)
    keys = parse_field62(decode_frame(reply_frame).message.binary(62), "003")
    print("key check values kept in the journal:", keys.kcvs())

    _section("3. purchase 0200 of 12.34 yuan with its CUP ECB MAC")
    # On a terminal the card module holds the MAK and computes this from R; here software does.
    mak = DesKey(clear["MAK"])

    def module_mac(r: bytes) -> bytes:
        return cup_ecb_mac(r, mak.encrypt)

    purchase = purchase_request(DEMO_TERMINAL, stan=2, batch=1, amount_fen=1234, card=DEMO_CARD)
    purchase_bytes = encode_with_mac(purchase, module_mac)
    print("MAC verifies:", mac_matches(purchase_bytes, module_mac))
    _show(
        "terminal -> host (PAN masked, track and PIN removed)",
        host_frame(purchase_bytes, tpdu, header),
    )

    _section("4. the host has forgotten the terminal: 0210 with 97, header asks for sign-in")
    declined = encode_with_mac(response_to(purchase, "97"), module_mac)
    _show(
        "host -> terminal",
        host_frame(declined, tpdu.swapped(), header.with_processing_requirement(3)),
    )

    _section("5. agent explain 97")
    rc = codes.lookup("97")
    print(f"{rc.code}  {rc.zh} / {rc.en}")
    print(f"category: {rc.category}")
    print(f"action:   {rc.action_en}")
    print(f"处理:     {rc.action_zh}")
    return 0
