"""Tracks encrypted under the TDK (53.3 = 1) hold any nibble; clear tracks only digits and D."""

import pytest

from agent.wire.describe import describe_message
from agent.wire.errors import DecodeError, EncodeError
from agent.wire.mask import masked_fields
from agent.wire.message import Message, decode_message, encode_message
from tests.independent_iso8583 import decode_body

ENCRYPTED_CONTROL = "2610000000000000"  # 53.1 PIN format 2, 53.2 3DES, 53.3 tracks encrypted
CLEAR_CONTROL = "2600000000000000"
CIPHERTEXT = "A1B2C3D4E5F60718293A4B5C6D7E8F9012D"  # 35 nibbles of track 2 ciphertext


def test_an_encrypted_track_round_trips_as_hex() -> None:
    message = Message("0200", {35: CIPHERTEXT, 36: "FFEEDDCCBBAA", 53: ENCRYPTED_CONTROL})
    encoded = encode_message(message)
    decoded = decode_message(encoded)
    assert decoded == message
    assert decode_body(encoded)["fields"] == message.fields
    assert bytes.fromhex(CIPHERTEXT + "0") in encoded  # odd length: right-padded with 0


def test_a_clear_track_keeps_the_separator() -> None:
    message = Message("0200", {35: "6217001234567890123=2812101", 53: CLEAR_CONTROL})
    assert decode_message(encode_message(message)) == message


def test_hex_in_a_clear_track_is_a_precise_error() -> None:
    with pytest.raises(EncodeError, match=r"field 35 \(track 2\): z..37 LL takes digits and '='"):
        encode_message(Message("0200", {35: CIPHERTEXT, 53: CLEAR_CONTROL}))
    encoded = encode_message(Message("0200", {35: CIPHERTEXT, 53: ENCRYPTED_CONTROL}))
    flag = encoded.rindex(bytes.fromhex(ENCRYPTED_CONTROL))
    tampered = encoded[:flag] + bytes.fromhex(CLEAR_CONTROL) + encoded[flag + 8 :]
    with pytest.raises(DecodeError, match=r"at byte 10, field 35 .*nibble other than 0-9 and D"):
        decode_message(tampered)


def test_an_encrypted_track_takes_only_hex() -> None:
    with pytest.raises(EncodeError, match=r"encrypted \(53.3 = 1\) and takes upper-case hex"):
        encode_message(Message("0200", {35: "6217=2812", 53: ENCRYPTED_CONTROL}))


def test_an_encrypted_track_is_masked_like_a_clear_one() -> None:
    message = Message("0200", {35: CIPHERTEXT, 53: ENCRYPTED_CONTROL})
    assert masked_fields(message)[35] == "<track 2 removed, 35 characters>"
    described = describe_message(message)
    assert CIPHERTEXT not in str(described)


def test_a_decoded_track_is_checked_again_once_53_changes() -> None:
    """A decoded message passes its unchanged fields on in the bytes they came in, but how a
    track is encoded depends on 53.3: with 53 changed, the kept ciphertext is a clear track now,
    and hex in a clear track is refused as for any message."""
    decoded = decode_message(
        encode_message(Message("0200", {35: CIPHERTEXT, 53: ENCRYPTED_CONTROL}))
    )
    assert decoded.wire is not None
    decoded.fields[53] = CLEAR_CONTROL
    with pytest.raises(EncodeError, match=r"field 35 \(track 2\): z..37 LL takes digits and '='"):
        encode_message(decoded)


def test_the_wire_bytes_a_message_keeps_never_show_in_its_text() -> None:
    """A decoded message keeps its fields' bytes to pass them on; printed, it shows which
    fields, never the card number or track inside them."""
    pan = "6217001234567890123"
    decoded = decode_message(
        encode_message(Message("0200", {2: pan, 35: pan + "=2812101", 53: CLEAR_CONTROL}))
    )
    assert decoded.wire is not None
    for text in (repr(decoded.wire), repr(decoded), str(decoded)):
        assert "7001234567" not in text and "2812101" not in text
        assert bytes.fromhex("6217001234567890123F")[:8].hex() not in text.lower()
    assert repr(decoded.wire) == "Wire(profile='cup', fields=[2, 35, 53])"


def test_a_host_answer_and_the_apps_encoded_answer_never_show_in_an_attempts_text() -> None:
    """What the gateway carries between its steps (the host's frame as received, the app's
    answer encoded ahead) holds card data: printed, neither shows."""
    from agent.host.mux import Exchange
    from agent.transaction.sender import Attempt
    from agent.wire.frame import Frame, Layout
    from agent.wire.profile import CUP

    pan = "6217001234567890123"
    answer = Message("0210", {2: pan, 39: "00"})
    encoded = encode_message(answer)
    exchange = Exchange(Frame(Layout.BARE, answer), encoded, "127.0.0.1:1")
    attempt = Attempt(answer, exchange, 1, None, (CUP, encoded))
    for text in (repr(exchange), repr(attempt), str(attempt)):
        assert "7001234567" not in text and encoded.hex() not in text and repr(encoded) not in text
