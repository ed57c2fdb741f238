"""Matching host answers to the requests in flight (agent/host/mux.py)."""

import asyncio

from agent.host.mux import Exchange, Mux, match_key, network_code
from agent.wire.frame import Frame, Layout
from agent.wire.message import Message

TID = "10000001"


def answer(mti: str, **fields: str) -> Exchange:
    numbers = {11: fields.get("stan"), 39: "00", 41: fields.get("tid", TID),
               60: fields.get("field_60", "00000001360")}  # fmt: skip
    message = Message(mti, {n: v for n, v in numbers.items() if v is not None})
    return Exchange(Frame(Layout.TPDU, message), b"")


def request(mti: str, stan: str, tid: str = TID, field_60: str = "00000001360") -> Message:
    return Message(mti, {11: stan, 41: tid, 60: field_60})


def deliveries(*requests: Message, answers: list[Exchange]) -> tuple[list, list]:
    """Which request got which answer, and what went unmatched."""
    unmatched: list[Exchange] = []

    async def scenario() -> list:
        mux = Mux(lambda exchange, _: unmatched.append(exchange))
        futures = [mux.expect(match_key(r), network_code(r)) for r in requests]
        for exchange in answers:
            mux.deliver(exchange)
        return [f.result() if f.done() else None for f in futures]

    return asyncio.run(scenario()), unmatched


def test_an_answer_goes_to_its_mti_stan_and_tid() -> None:
    first, second = answer("0810", stan="000002"), answer("0210", stan="000001")
    got, unmatched = deliveries(
        request("0200", "000001"), request("0800", "000002"), answers=[first, second]
    )
    assert got == [second, first] and unmatched == []


def test_a_download_answer_without_a_stan_goes_to_the_one_step_in_flight() -> None:
    """A host that echoes only 41, 42 and 60 of an 0800/360 (DESIGN.md section 16)."""
    step = answer("0810")
    got, unmatched = deliveries(request("0800", "000007"), answers=[step])
    assert got == [step] and unmatched == []


def test_without_a_stan_two_in_flight_would_be_a_guess() -> None:
    step = answer("0810")
    got, unmatched = deliveries(
        request("0800", "000007"), request("0800", "000008"), answers=[step]
    )
    assert got == [None, None] and unmatched == [step]


def test_without_a_stan_another_terminal_or_a_financial_answer_is_unmatched() -> None:
    other, sale = answer("0810", tid="10000002"), answer("0210")
    got, unmatched = deliveries(
        request("0800", "000007"), request("0200", "000008"), answers=[other, sale]
    )
    assert got == [None, None] and unmatched == [other, sale]


def test_without_a_stan_a_download_answer_never_goes_to_a_sign_in_or_another_step() -> None:
    """A late 0810 of a download step (its 62 parameters) must not become a sign-in's keys, nor
    one step's answer another's: the network management code must match too."""
    late_step = answer("0810", field_60="00000001360")
    got, unmatched = deliveries(request("0800", "000009", field_60="00000001003"),
                                answers=[late_step])  # fmt: skip
    assert got == [None] and unmatched == [late_step]
    signin_answer = answer("0810", field_60="00000001003")
    got, unmatched = deliveries(request("0800", "000009", field_60="00000001003"),
                                answers=[signin_answer])  # fmt: skip
    assert got == [None] and unmatched == [signin_answer]
    other_step = answer("0810", field_60="00000001370")
    got, unmatched = deliveries(request("0800", "000010"), answers=[other_step])
    assert got == [None] and unmatched == [other_step]
