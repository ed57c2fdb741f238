"""Field 59 and the terminal hardware serial number (DESIGN.md sections 4 and 17) through a real
agent: what reaches the host (read off the host simulator's own frames), what the app gets."""

from __future__ import annotations

import asyncio

import pytest

from agent import __version__
from agent.sim.module import TEST_TUSN_KEY
from agent.wire import field59
from agent.wire.frame import Layout, decode_frame
from agent.wire.mac import tusn_ciphertext
from agent.wire.message import Message, encode_message
from tests.integration.gateway_rig import PAN, TID, app_purchase, exchange, gateway_rig


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def seen_by_host(rig) -> list[Message]:
    """Every request the host simulator takes from now on, decoded as it arrived."""
    seen: list[Message] = []
    handle = rig.host.handle

    def spying(frame: bytes) -> bytes | None:
        seen.append(decode_frame(frame, Layout.TPDU).message)
        return handle(frame)

    rig.host.handle = spying  # type: ignore[method-assign]
    return seen


def pre_authorisation(amount_fen: int) -> Message:
    request = app_purchase(amount_fen)
    request.mti = "0100"
    request.fields.update({3: "030000", 25: "06", 60: "10000000"})
    return request


def balance_inquiry() -> Message:
    request = app_purchase(0)
    del request.fields[4]
    request.fields.update({3: "310000", 60: "01000000"})
    return request


def module_tusn(rig) -> str:
    return rig.module_port.simulator.state.tusn


@pytest.mark.parametrize("build", [app_purchase, pre_authorisation], ids=["purchase", "pre-auth"])
def test_a_request_without_a2_leaves_with_the_modules(tmp_path, build) -> None:
    """A legacy app sends no field 59: the host gets A2 with all five sub-usages, the
    ciphertext the module computed for this card's factor (the last 6 digits of the PAN)."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            seen = seen_by_host(rig)
            answer = await exchange(rig.socket, build(1200))
            assert answer.text(39) == "00"
            sent = seen[-1]
            a2 = field59.find_usage(sent.binary(59), "A2")
            assert a2 is not None and field59.a2_problem(a2) is None
            tusn = module_tusn(rig)
            assert field59.sub_usages(a2) == {
                "01": "02",
                "02": tusn,
                "03": PAN[-6:],
                "04": tusn_ciphertext(TEST_TUSN_KEY, tusn, PAN[-6:]),
                "05": __version__[:8].ljust(8),
            }

    run(scenario())


def test_a_balance_inquiry_carries_no_a2(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            seen = seen_by_host(rig)
            assert (await exchange(rig.socket, balance_inquiry())).text(39) == "00"
            assert 59 not in seen[-1]

    run(scenario())


def test_an_apps_own_field_59_is_forwarded_byte_for_byte(tmp_path) -> None:
    """The app's A2, A5 and a usage no table names go to the host exactly as sent (inside the
    MAB: the host's MAC check passes), and nothing is added."""
    tusn = "00009902APP0000000000009"
    own = field59.build_a2("04", tusn, PAN[-6:], "0123ABCD", "app 2.1")
    value = (
        b"Z9003xyz"
        + b"A2" + f"{len(own):03d}".encode() + own
        + b"A5" + b"014" + b"01004121.0205"
    )  # fmt: skip

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            seen = seen_by_host(rig)
            request = app_purchase(1300)
            request.fields[59] = value
            assert (await exchange(rig.socket, request)).text(39) == "00"
            assert seen[-1].binary(59) == value
            assert rig.host.ledger.mac_failures == 0

    run(scenario())


@pytest.mark.parametrize("mode", ["app", "off"])
def test_without_the_module_mode_nothing_is_added(tmp_path, mode) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"registration": {"tusn": mode}}) as rig:
            seen = seen_by_host(rig)
            assert (await exchange(rig.socket, app_purchase(1400))).text(39) == "00"
            assert 59 not in seen[-1]

    run(scenario())


def test_a_module_without_a_tusn_key_sends_the_request_without_a2(tmp_path) -> None:
    """The module answers TUSN with "key absent": the request still goes (the acquirer decides),
    without A2, and a refusal would be reported as a2-missing."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.module_port.simulator.state.tusn_key = None
            seen = seen_by_host(rig)
            assert (await exchange(rig.socket, app_purchase(1500))).text(39) == "00"
            assert 59 not in seen[-1]

    run(scenario())


def test_a_field_the_profile_lacks_is_a_local_30_and_the_connection_stays(tmp_path) -> None:
    """Field 5 has no row in the CUP profile: the app gets 30 naming it, on a connection that
    still carries its next purchase."""
    from agent.wire.frame import with_length
    from agent.wire.message import decode_message

    good = encode_message(app_purchase(1600))
    bitmap = bytearray(good[2:10])
    bitmap[0] |= 0x08  # field 5
    strange = good[:2] + bytes(bitmap) + good[10:]

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            reader, writer = await asyncio.open_unix_connection(str(rig.socket))
            try:
                answers = []
                for frame in (strange, encode_message(app_purchase(1700))):
                    writer.write(with_length(frame))
                    await writer.drain()
                    length = int.from_bytes(await reader.readexactly(2), "big")
                    answers.append(decode_message(await reader.readexactly(length)))
            finally:
                writer.close()
            assert answers[0].text(39) == "30"
            assert "field 5" in answers[0].text(63), answers[0].text(63)
            assert answers[1].text(39) == "00"

    run(scenario())


# ------------------------------------------------------------------------ whose refusal it is


def acquirer_checks_tusn(rig, reported: bool, refusal: str = "97") -> str:
    """The host checks A2 as acquirers do, with this terminal's TUSN reported or not."""
    from agent.sim.site import TID

    tusn = module_tusn(rig)
    rig.host.set_tusn_check(True, refusal, TEST_TUSN_KEY)
    rig.host.report_tusn(TID, tusn, reported=reported)
    return tusn


def sign_ins(rig) -> int:
    return rig.host.ledger.requests.get("0800", 0)


def events_of(rig, kind: str) -> list[dict]:
    return [e for e in rig.agent.journal.events() if e["kind"] == kind]


def test_a_tusn_refusal_is_the_requests_and_the_terminal_stays_registered(tmp_path) -> None:
    """The host refuses a purchase whose TUSN it has not reported, after a sign-in it approved:
    the terminal is registered (balance inquiries go on), the app gets 97 with the cause and
    the TUSN, the journal, the status and the hooks hear of it; the next refusal of the same
    kind needs no sign-in; once the TUSN is reported the next purchase is approved."""
    from agent.recovery.policy import State
    from agent.sim.site import TID

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            tusn = acquirer_checks_tusn(rig, reported=False)
            first = await exchange(rig.socket, app_purchase(2000))
            assert first.text(39) == "97"
            cause = first.text(63)
            assert cause.startswith("AGENT registration.tusn-refused: "), cause
            assert tusn in cause and "register the terminal" not in cause
            recovery = rig.agent.recovery
            assert recovery.state is State.REGISTERED and recovery.hold() is None
            assert (await exchange(rig.socket, balance_inquiry())).text(39) == "00"

            signed = sign_ins(rig)
            second = await exchange(rig.socket, app_purchase(2100))
            assert second.text(39) == "97" and second.text(63) == cause
            assert sign_ins(rig) == signed  # attributed at once: no sign-in per refused sale

            status = await rig.agent.status()
            assert status["registered"] is True
            assert status["refused_requests"]["by_finding"] == {"registration.tusn-refused": 2}
            refusals = events_of(rig, "request-refused")
            assert [(e["finding"], e["tusn"], e["repeated"]) for e in refusals] == [
                ("registration.tusn-refused", tusn, False),
                ("registration.tusn-refused", tusn, True),
            ]
            assert not events_of(rig, "recovery.unregistered")

            rig.host.report_tusn(TID, tusn)
            assert (await exchange(rig.socket, app_purchase(2200))).text(39) == "00"
            assert rig.host.state()["tusn_refusals"] == {"tusn-not-reported": 3}

            # a purchase was approved since: the next refusal is looked into afresh
            rig.host.report_tusn(TID, tusn, reported=False)
            signed = sign_ins(rig)
            assert (await exchange(rig.socket, app_purchase(2250))).text(39) == "97"
            assert sign_ins(rig) > signed

    run(scenario())


def test_under_a_host_side_incident_a_refusal_after_a_sign_in_is_the_acquirers(tmp_path) -> None:
    """DESIGN.md section 7: during an incident the fleet announced, the merchant is told the
    acquirer is at fault and nothing on the terminal needs doing, never to have the TUSN
    reported, even when the one sign-in is approved and the retry refused; and no sale is held
    for it (the terminal stays registered: the next is sent, and approved once the host is)."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            acquirer_checks_tusn(rig, reported=False)
            rig.agent.recovery.incident.open("fleet incident", {"terminals": 25})
            answer = await exchange(rig.socket, app_purchase(2900))
            assert answer.text(39) == "97"
            assert answer.text(63).startswith("AGENT host.incident: the acquirer's host has a ")
            assert (await rig.agent.status())["state"] == "registered"
            kinds = [e["kind"] for e in rig.agent.journal.events()]
            assert "request-refused" not in kinds
            acquirer_checks_tusn(rig, reported=True)
            assert (await exchange(rig.socket, app_purchase(2905))).text(39) == "00"

    run(scenario())


def test_under_an_incident_a_refusal_within_the_sign_in_period_holds_no_sale(tmp_path) -> None:
    """The incident's one sign-in of the period was tried: a later refusal gets the host's
    code with the acquirer's fault in 63, and the terminal stays registered (sales are not
    held for up to recovery.incident_signin_every because one request was refused)."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.agent.recovery.incident.open("fleet incident", {"terminals": 25})
            rig.server.faults.add("refused-first", mti="0200")
            assert (await exchange(rig.socket, app_purchase(2900))).text(39) == "00"  # signed in
            rig.server.faults.add("refused-first", mti="0200")
            answer = await exchange(rig.socket, app_purchase(2910))
            assert answer.text(39) == "97"
            assert answer.text(63).startswith("AGENT host.incident: the acquirer's host has a ")
            status = await rig.agent.status()
            assert status["state"] == "registered"
            assert (await exchange(rig.socket, app_purchase(2920))).text(39) == "00"

    run(scenario())


def test_under_an_incident_the_hosts_requirements_do_not_reprovision_or_sign_in_again(
    tmp_path,
) -> None:
    """DESIGN.md section 7: during an incident no re-provisioning and at most one sign-in per
    period, whoever asks: the header's requirements 6 and 3 included."""
    from agent.sim.site import TID

    async def scenario():
        sections = {"session": {"repeat_after": 0}}  # each requirement acted on
        async with gateway_rig(tmp_path, sections=sections) as rig:
            rig.put_tms()
            rig.agent.recovery.incident.open("fleet incident", {"terminals": 25})
            signins = rig.host.state()["requests"]["0800"]
            for requirement in (3, 3, 6):
                rig.host.terminals[TID].asks = requirement
                assert (await exchange(rig.socket, app_purchase(2950))).text(39) == "00"
                await rig.agent.host_requests.idle()
            assert rig.host.state()["requests"]["0800"] == signins + 1  # one in the period
            failed = {e["requirement"]: e["reason"] for e in rig.agent.journal.events()
                      if e["kind"] == "host-asks-failed"}  # fmt: skip
            assert "does not re-provision" in failed[6]
            assert "at most once per recovery.incident_signin_every" in failed[3]

    run(scenario())


def test_under_an_incident_the_apps_own_sign_ins_are_limited_too(tmp_path) -> None:
    """DESIGN.md section 7: at most one sign-in per period under an incident, the payment
    app's own included; the others are answered locally with the reason."""
    from agent.wire.message import Message

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.agent.recovery.incident.open("fleet incident", {"terminals": 25})
            signins = rig.host.state()["requests"]["0800"]
            answers = []
            for stan in range(321, 326):
                app_signin = Message("0800", {11: f"{stan:06d}", 60: "00000000003", 63: "001"})
                answers.append(await exchange(rig.socket, app_signin))
            assert rig.host.state()["requests"]["0800"] == signins + 1
            assert [a.text(39) for a in answers] == ["00", "96", "96", "96", "96"]
            assert answers[1].text(11) == "000322"
            assert answers[1].text(63).startswith("AGENT host.incident: ")
            assert "at most once per recovery.incident_signin_every" in answers[1].text(63)

    run(scenario())


def test_an_incident_announced_after_the_terminal_was_unregistered_changes_what_it_says(
    tmp_path,
) -> None:
    """The usual order: terminals are refused, the fleet sees many and announces the incident.
    What the merchant was told ("have the terminal registered") becomes the acquirer's fault."""
    from agent.recovery.policy import State
    from agent.sim.site import TID

    async def scenario():
        async with gateway_rig(tmp_path, sections={"recovery": {"probe_first": 60}}) as rig:
            rig.host.set_status(TID, "cancelled")
            assert (await exchange(rig.socket, app_purchase(2930))).text(39) == "97"
            assert rig.agent.recovery.state is State.UNREGISTERED
            rig.agent.recovery.incident.open("fleet incident", {"terminals": 25})
            for _ in range(50):
                if (await rig.agent.status())["cause"] == "host.incident":
                    break
                await asyncio.sleep(0.02)
            status = await rig.agent.status()
            assert (status["state"], status["cause"]) == ("unregistered", "host.incident")
            answer = await exchange(rig.socket, app_purchase(2940))  # held, told why
            assert "acquirer" in answer.text(63), answer.text(63)
            rig.agent.recovery.incident.close("fleet")  # the acquirer repaired; this terminal not
            for _ in range(50):
                if (await rig.agent.status())["cause"] != "host.incident":
                    break
                await asyncio.sleep(0.02)
            status = await rig.agent.status()
            assert (status["state"], status["cause"]) == ("unregistered", "host.97-after-signin")

    run(scenario())


@pytest.mark.parametrize("code", ["58", "A7"])
def test_an_acquirer_refusing_the_tusn_with_another_code_leaves_the_terminal_registered(
    tmp_path, code
) -> None:
    """58 (not permitted on this terminal) or A7 (security processing failed, the ciphertext
    not verified): after an approved sign-in, still the purchase's refusal."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            acquirer_checks_tusn(rig, reported=False, refusal=code)
            answer = await exchange(rig.socket, app_purchase(2800))
            assert answer.text(39) == code
            assert answer.text(63).startswith("AGENT registration.tusn-refused: ")
            assert (await rig.agent.status())["registered"] is True

    run(scenario())


@pytest.mark.parametrize(
    ("mode", "finding"),
    [("off", "registration.a2-missing"), ("app", "registration.a2-missing")],
)
def test_a_refusal_of_a_request_without_a2_names_it(tmp_path, mode, finding) -> None:
    async def scenario():
        async with gateway_rig(tmp_path, sections={"registration": {"tusn": mode}}) as rig:
            acquirer_checks_tusn(rig, reported=True)
            answer = await exchange(rig.socket, app_purchase(2300))
            assert answer.text(39) == "97"
            assert answer.text(63).startswith(f"AGENT {finding}: "), answer.text(63)
            assert (await rig.agent.status())["registered"] is True

    run(scenario())


def test_an_apps_malformed_a2_is_named_in_the_refusal(tmp_path) -> None:
    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            acquirer_checks_tusn(rig, reported=True)
            request = app_purchase(2400)
            items = [("01", "02"), ("02", module_tusn(rig)), ("03", PAN[-6:])]  # no 04
            a2 = field59.build_subusages(items, "A2")
            assert "04" in str(field59.a2_problem(a2))
            request.fields[59] = field59.with_usage(None, "A2", a2)
            answer = await exchange(rig.socket, request)
            assert answer.text(39) == "97"
            assert answer.text(63).startswith("AGENT registration.a2-malformed: "), answer.text(63)

    run(scenario())


def test_an_apps_a2_with_another_cards_factor_is_named_malformed(tmp_path) -> None:
    """Section 17: A2's random factor is the last 6 digits of the request's PAN. An app that
    puts another card's (well-formed otherwise, its ciphertext right for it) is refused by an
    acquirer that checks; the refusal names the app's A2, not the TUSN's reporting, and never
    quotes the digits."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            acquirer_checks_tusn(rig, reported=True)
            request = app_purchase(2450)
            factor = "999999" if PAN[-6:] != "999999" else "000000"
            tusn = module_tusn(rig)
            cipher = tusn_ciphertext(TEST_TUSN_KEY, tusn, factor)
            a2 = field59.build_a2("02", tusn, factor, cipher, "app 2.1")
            assert field59.a2_problem(a2) is None  # well-formed as a value alone
            request.fields[59] = field59.with_usage(None, "A2", a2)
            answer = await exchange(rig.socket, request)
            assert answer.text(39) == "97"
            said = answer.text(63)
            assert said.startswith("AGENT registration.a2-malformed: "), said
            assert factor not in said and PAN[-6:] not in said
            assert (await rig.agent.status())["registered"] is True
            told = str(rig.agent.journal.events())
            assert "03 (random factor) is not the card's" in told and factor not in told

    run(scenario())


def test_every_kind_of_request_refused_is_the_terminals_refusal(tmp_path) -> None:
    """Purchases refused for their TUSN, and then balance inquiries (which carry no A2) refused
    too after an approved sign-in: the host refuses the terminal, whatever it sends."""
    from agent.recovery.policy import State

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            acquirer_checks_tusn(rig, reported=False)
            assert (await exchange(rig.socket, app_purchase(2500))).text(39) == "97"
            assert rig.agent.recovery.state is State.REGISTERED
            rig.server.faults.add("refused-first", count=10, mti="0200")
            assert (await exchange(rig.socket, balance_inquiry())).text(39) == "97"
            assert rig.agent.recovery.state is State.UNREGISTERED
            assert events_of(rig, "recovery.unregistered")

    run(scenario())


def test_kinds_refused_with_different_codes_stay_the_requests(tmp_path) -> None:
    """Purchases refused 97 for their TUSN and balance inquiries refused 58 (not permitted on
    this terminal) after approved sign-ins: two refusals for two reasons, not the host refusing
    the terminal whatever it sends; it stays registered, each told its own cause."""
    from agent.recovery.policy import State

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            acquirer_checks_tusn(rig, reported=False)
            rig.host.terminals[TID].not_permitted = ("31",)
            assert (await exchange(rig.socket, app_purchase(2500))).text(39) == "97"
            inquiry = await exchange(rig.socket, balance_inquiry())
            assert inquiry.text(39) == "58", inquiry.text(63)
            assert rig.agent.recovery.state is State.REGISTERED
            assert not events_of(rig, "recovery.unregistered")

    run(scenario())


def test_a_kind_refused_otherwise_before_does_not_hide_every_kind_refused_alike(tmp_path) -> None:
    """Inquiries refused 58 (not permitted here); then the host refuses the terminal: a sale
    and an offline upload (which carries no A2) both refused 97 after approved sign-ins are
    every kind refused, the earlier 58 notwithstanding."""
    from agent.recovery.policy import State

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.host.terminals[TID].not_permitted = ("31",)
            assert (await exchange(rig.socket, balance_inquiry())).text(39) == "58"
            rig.server.faults.add("refused-first", count=10, mti="0200")
            assert (await exchange(rig.socket, app_purchase(2500))).text(39) == "97"
            assert rig.agent.recovery.state is State.REGISTERED
            upload = app_purchase(2600, app_stan=902)
            upload.fields[60] = "36000000"  # offline (EC) upload: no A2
            assert (await exchange(rig.socket, upload)).text(39) == "97"
            assert rig.agent.recovery.state is State.UNREGISTERED

    run(scenario())


def test_one_kind_of_request_refused_alone_stays_the_requests(tmp_path) -> None:
    """Balance inquiries refused (97) after an approved sign-in while purchases are approved:
    the refusal is the request's (finding request.refused), the terminal stays registered."""
    from agent.recovery.policy import State

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.server.faults.add("refused-first", count=3, mti="0200")
            answer = await exchange(rig.socket, balance_inquiry())
            assert answer.text(39) == "97"
            assert answer.text(63).startswith("AGENT request.refused: "), answer.text(63)
            assert rig.agent.recovery.state is State.REGISTERED
            rig.server.faults.clear()
            assert (await exchange(rig.socket, app_purchase(2600))).text(39) == "00"

    run(scenario())


def test_kinds_refused_while_another_kind_works_stay_the_requests(tmp_path) -> None:
    """Purchases approved; then balance inquiries and pre-authorisations refused after
    approved sign-ins (a merchant not enabled for them): not "every message class" (DESIGN.md
    section 7), so the terminal stays registered and purchases go on."""
    from agent.recovery.policy import State

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            assert (await exchange(rig.socket, app_purchase(2600))).text(39) == "00"
            rig.server.faults.add("refused-first", count=3, mti="0200")
            assert (await exchange(rig.socket, balance_inquiry())).text(39) == "97"
            rig.server.faults.clear()
            rig.server.faults.add("refused-first", count=3, mti="0100")
            answer = await exchange(rig.socket, pre_authorisation(2700))
            assert answer.text(39) == "97"
            assert answer.text(63).startswith("AGENT "), answer.text(63)
            assert rig.agent.recovery.state is State.REGISTERED
            rig.server.faults.clear()
            assert (await exchange(rig.socket, app_purchase(2800))).text(39) == "00"

    run(scenario())


def test_a_refused_sign_in_still_makes_the_terminal_unregistered(tmp_path) -> None:
    from agent.recovery.policy import State
    from agent.sim.site import TID

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            rig.host.set_status(TID, "cancelled")
            answer = await exchange(rig.socket, app_purchase(2700))
            assert answer.text(39) == "97"
            assert rig.agent.recovery.state is State.UNREGISTERED
            assert not events_of(rig, "request-refused")

    run(scenario())


def test_two_purchases_refused_at_once_both_name_the_cause(tmp_path) -> None:
    """The second refusal arrives while the first one's recovery runs: it waits for it, is
    retried, and is judged the same way (the cause in 63, the terminal registered)."""

    async def scenario():
        async with gateway_rig(tmp_path) as rig:
            acquirer_checks_tusn(rig, reported=False)
            answers = await asyncio.gather(
                exchange(rig.socket, app_purchase(2900)), exchange(rig.socket, app_purchase(2901))
            )
            for answer in answers:
                assert answer.text(39) == "97"
                assert answer.text(63).startswith("AGENT registration.tusn-refused: ")
            assert (await rig.agent.status())["registered"] is True

    run(scenario())
