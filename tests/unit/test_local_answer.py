"""The agent's own answers (DESIGN.md section 4): field 39 the code, field 63 ``AGENT``, the
finding code and the reason in printable ASCII, clipped to the field's 163 characters, no MAC."""

from __future__ import annotations

import re

from agent.transaction.sender import agent_reason, local_answer
from agent.wire.message import Message, decode_message, encode_message

FORM = re.compile(r"AGENT [a-z][a-z0-9]*\.[a-z0-9][a-z0-9-]*: [ -~]+")


def purchase() -> Message:
    fields = {3: "000000", 4: "000000001000", 11: "000123", 25: "00", 64: b"\0" * 8}
    return Message("0200", fields)


def test_a_local_answer_carries_the_code_the_finding_and_the_reason() -> None:
    answer = local_answer(purchase(), "96", "host.no-answer", "no response within 30.0 s")
    assert answer.mti == "0210" and answer.text(39) == "96" and answer.text(11) == "000123"
    assert answer.text(63) == "AGENT host.no-answer: no response within 30.0 s"
    assert 64 not in answer
    assert decode_message(encode_message(answer)).text(63) == answer.text(63)


def test_a_reason_that_is_not_printable_ascii_is_escaped() -> None:
    """An exception's text may hold a path in Chinese or a control character: field 63 is ASCII
    (an answer that cannot be encoded would reach the app as nothing at all)."""
    text = agent_reason("storage.journal-unwritable", "cannot open /数据/journal\n\x00")
    assert FORM.fullmatch(text), text
    assert text.endswith(r"cannot open /\u6570\u636e/journal\n\x00")
    answer = local_answer(purchase(), "96", "storage.journal-unwritable", "/数据 \t")
    assert decode_message(encode_message(answer)).text(63) == answer.text(63)


def test_a_long_reason_is_clipped_to_the_field() -> None:
    text = agent_reason("request.format", "x" * 500)
    assert len(text) == 163 and text.startswith("AGENT request.format: xxx")


def test_a_response_mti_is_answered_with_its_own() -> None:
    answer = local_answer(Message("0210", {11: "000001"}), "30", "request.format", "a response")
    assert answer.mti == "0210" and answer.text(39) == "30"
    assert FORM.fullmatch(answer.text(63))
