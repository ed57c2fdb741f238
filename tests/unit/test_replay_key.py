"""What makes two requests the same for a replay (DESIGN.md section 10): app STAN aside, the MTI,
processing code, amount, 25, 60.1, TID/MID and the card, as a keyed digest."""

from agent.transaction.stan_map import card_number, replay_key
from agent.wire.builders import Terminal
from agent.wire.message import Message

PAN = "6217001234567890123"
TERMINAL = Terminal("10000001", "898100012340001")
SECRET = bytes(32)
PURCHASE = Message(
    "0200", {2: PAN, 3: "000000", 4: "000000001000", 11: "000901", 25: "00", 60: "22000001"}
)


def test_the_card_is_the_pan_else_track_2_else_5a() -> None:
    assert card_number(Message("0200", {2: PAN})) == PAN.encode()
    assert card_number(Message("0200", {35: PAN + "D2812101"})) == PAN.encode()
    # an encrypted track (53.3 = 1) may hold any nibble: all of it, not up to a "D"
    encrypted = {35: "D1A2B3C4D5E6F708", 53: "2610000000000000"}
    assert card_number(Message("0200", encrypted)) == b"D1A2B3C4D5E6F708"
    icc = bytes.fromhex("5A0A6217001234567890123F")
    assert card_number(Message("0200", {55: icc})) == PAN.encode()


def test_anything_a_host_charges_on_makes_another_request() -> None:
    same = replay_key(PURCHASE, TERMINAL, SECRET)
    assert replay_key(Message("0200", dict(PURCHASE.fields)), TERMINAL, SECRET) == same
    assert PAN not in same and PAN[-4:] not in same  # a digest, never the card number
    changes = [
        {2: "6222021234567890128"},  # another card
        {4: "000000001001"},  # another amount
        {25: "06", 60: "20000001"},  # a completion under the purchase's STAN
        {3: "200000", 60: "23000001"},  # a void
    ]
    for change in changes:
        other = Message("0200", {**PURCHASE.fields, **change})
        assert replay_key(other, TERMINAL, SECRET) != same, change
    assert replay_key(PURCHASE, Terminal("10000002", TERMINAL.mid), SECRET) != same
    assert replay_key(PURCHASE, TERMINAL, bytes([1]) * 32) != same  # keyed
