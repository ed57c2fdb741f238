"""The parts stand on their own (DESIGN.md section 13): recovery, the host session and the
transaction layer are built from fakes, without the composition root (``Agent``), and do their
jobs. What a part needs it is given at construction; nothing calls back into the root."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.blocking import Gate
from agent.config import RecoveryConfig, build
from agent.hook_dispatch import HookDispatch
from agent.journal import Journal
from agent.recovery.engine import Recovery
from agent.recovery.policy import State
from agent.selfcheck import Report
from agent.selfcheck.base import CheckResult, Status, Text
from agent.session.host_session import HostSession
from agent.session.store import ParameterStore
from agent.settings import Settings
from agent.transaction.app_socket import Reply
from agent.transaction.sender import Attempt
from agent.transaction.stats import GatewayStats
from agent.transaction.wrap import WrapMode
from agent.wire.frame import Frame, Header, Layout, Tpdu
from agent.wire.message import Message, decode_message, encode_message
from agent.wire.profile import CUP


class FakeRemedies:
    def __init__(self) -> None:
        self.done: list[str] = []
        self.told: list[str] = []

    async def self_check(self) -> Report:
        ok = CheckResult("keys", Status.OK, Text("fine", "正常"))
        return Report([ok], 1)

    async def sign_in(self) -> str:
        self.done.append("sign-in")
        return "signed in"

    async def provision(self, reason: str) -> str:
        self.done.append(f"provision: {reason}")
        return "provisioned"

    async def sync_clock(self, clock: dict[str, Any]) -> str:
        return "clock"

    async def fail_over(self) -> str:
        return "failed over"

    async def download_tmk(self) -> str:
        return "master key downloaded"

    async def tmk_download_due(self) -> bool:
        return False

    def tell_hooks(self, event: str, payload: dict[str, Any]) -> None:
        self.told.append(event)

    def identity(self) -> dict[str, str]:
        return {"tid": "10000001", "mid": "898100012340001", "support_phone": ""}

    def signed_in_at(self) -> str:
        return "10.0.0.5:5000"


PURCHASE = Message("0200", {3: "000000", 4: "000000001000", 11: "000901", 25: "00", 60: "22000000"})


def _exchange(code: str) -> Any:
    from agent.host.mux import Exchange

    answer = Message("0210", {3: "000000", 4: "000000001000", 11: "000901", 39: code})
    body = encode_message(answer)
    frame = Frame(Layout.TPDU, answer, Tpdu(), Header())
    return Exchange(frame, body, "10.0.0.5:5000")


def test_recovery_from_fakes_signs_in_and_retries() -> None:
    remedies = FakeRemedies()
    retried: list[Message] = []

    async def retry(request: Message, field_59: Any, *, wire_stan: str = "") -> Attempt:
        retried.append(request)
        return Attempt(_exchange("00").frame.message, _exchange("00"), transaction=7)

    settings = RecoveryConfig()
    recovery = Recovery(
        remedies,
        FakeJournal(),  # type: ignore[arg-type]
        retry,
        settings=lambda: settings,
        gate=Gate(lambda: settings.deadline),
    )
    refused = Attempt(_exchange("97").frame.message, _exchange("97"))
    final = asyncio.run(recovery.after_response(PURCHASE, refused))
    assert final.answer.text(39) == "00" and final.transaction == 7
    assert remedies.done == ["sign-in"] and retried == [PURCHASE]
    assert recovery.state is State.REGISTERED and "on-97" in remedies.told


def test_recovery_from_fakes_tells_a_refused_request_from_an_unregistered_terminal() -> None:
    """The retry after an approved sign-in is refused again: the request's refusal (the
    terminal stays registered, the cause in 63), and the retry carried the first try's field
    59 unchanged."""
    from agent.registration.a2 import Outgoing59
    from agent.registration.refusals import A2, A2Sent

    remedies = FakeRemedies()
    sent = Outgoing59(b"A2005abcde", A2Sent(A2.MODULE, "00009902SIM1"))
    carried: list[Any] = []

    async def retry(request: Message, field_59: Any, *, wire_stan: str = "") -> Attempt:
        carried.append(field_59)
        return Attempt(_exchange("97").frame.message, _exchange("97"), field_59=field_59)

    settings = RecoveryConfig()
    journal = FakeJournal()
    recovery = Recovery(
        remedies,
        journal,  # type: ignore[arg-type]
        retry,
        settings=lambda: settings,
        gate=Gate(lambda: settings.deadline),
    )
    refused = Attempt(_exchange("97").frame.message, _exchange("97"), field_59=sent)
    final = asyncio.run(recovery.after_response(PURCHASE, refused))
    assert carried == [sent] and remedies.done == ["sign-in"]  # no re-provisioning after it
    assert recovery.state is State.REGISTERED
    assert final.answer.text(63).startswith("AGENT registration.tusn-refused: ")
    assert "request-refused" in journal.noted and "request-refused" in remedies.told


class FakeJournal:
    def __init__(self) -> None:
        self.noted: list[str] = []

    def note(self, kind: str, **detail: Any) -> None:
        self.noted.append(kind)


def test_the_host_session_from_fakes_runs_what_the_host_asks(tmp_path) -> None:
    """Requirement 3 (sign in) and 6 (re-provision) are the remedies it was given; 1 is a
    download step sent through the link it was given, once recovery has settled."""
    settings = Settings(build({"terminal": {"tid": "10000001", "mid": "898100012340001"}},
                              "test", env={}))  # fmt: skip
    journal = Journal(tmp_path / "journal.sqlite3")
    sent: list[Message] = []
    settled: list[bool] = []

    class FakeLink:
        async def request(self, message: Message, encoded: bytes | None = None) -> Any:
            sent.append(message)
            answer = Message("0810", {11: message.text(11), 39: "00", 62: b"1230"})
            return type(_exchange("00"))(Frame(Layout.TPDU, answer, Tpdu(), Header()), b"", "host")

    async def wait_settled() -> None:
        settled.append(True)

    session = HostSession(
        settings,
        journal,
        FakeLink(),  # type: ignore[arg-type]
        object(),  # type: ignore[arg-type] - no module call on these paths
        ParameterStore(tmp_path / "parameters.json"),
        HookDispatch(settings, journal),
        wait_settled,
    )
    remedies = FakeRemedies()
    actions = session.actions(remedies)

    async def scenario() -> None:
        assert await actions[3].run() == "signed in"
        assert await actions[6].run() == "provisioned"
        await actions[1].run()

    asyncio.run(scenario())
    assert remedies.done == [
        "sign-in",
        "provision: the host asked for a TMS parameter download (6)",
    ]
    [step] = sent
    assert (step.mti, step.text(60)[8:11], step.text(41)) == ("0800", "360", "10000001")
    assert settled == [True]
    assert (
        session.downloads.store.read()["terminal"]["raw"] == b"1230".hex().upper()
    )  # tag 12 (timeout): 30
    journal.close()


def test_wrap_mode_from_fakes_answers_and_settles() -> None:
    """The transaction layer's mode needs a sender and what follows a refusal; the reply's
    settle hears whether the app got the answer (an approval it did not get is reversed)."""
    reversed_: list[int] = []

    class FakeStanMap:
        async def replayed(self, request: Message, terminal: Any) -> None:
            return None

    class FakeSender:
        stan_map = FakeStanMap()
        terminal = None

        async def attempt(self, request: Message, *, wire_stan: str = "") -> Attempt:
            return Attempt(_exchange("00").frame.message, _exchange("00"), transaction=42)

        async def reverse_undelivered(self, transaction: int) -> None:
            reversed_.append(transaction)

    class Passing:
        def hold(self) -> None:
            return None

        async def settled(self) -> bool:
            return True

        async def after_response(self, request: Message, attempt: Attempt) -> Attempt:
            return attempt

    async def observe(request: Message, answer: Message) -> None:
        pass

    mode = WrapMode(FakeSender(), Passing(), lambda: CUP, GatewayStats(), observe)  # type: ignore[arg-type]

    async def answer_and_settle() -> Reply | None:
        reply = await mode.process(encode_message(PURCHASE))
        assert reply is not None and reply.settle is not None
        await reply.settle(False)  # the app had gone
        return reply

    reply = asyncio.run(answer_and_settle())
    assert isinstance(reply, Reply) and decode_message(reply.frame).text(39) == "00"
    assert reversed_ == [42]
