"""``agent demo``: the agent at work, with no configuration.

It starts the acquirer host, TMS and card module simulators in this process (the module on a real
pty), runs a real agent between them and a payment app, and tells the story: sign-in, a purchase
approved, a purchase with a PIN typed on the card module's keypad (through the module socket), a
void by the receipt number the app printed; the host forgets the terminal, the next purchase gets
97, the self-check, the remedy and the approved retry; then the host cancels the terminal: 97,
remedies fail, the terminal is ``unregistered`` with a message in Chinese and English; then the
journal's timeline. Last, the terminal hardware serial number (TUSN, DESIGN.md sections 7 and
17): the acquirer checks field 59 A2 before it has this terminal's TUSN reported, a purchase is
refused yet the terminal stays registered and a balance inquiry is approved, the self-check
names the cause, the acquirer reports the TUSN and the next purchase is approved. Then a
module whose master key is not the acquirer's (DESIGN.md section 18): the acquirer rotates the
terminal's master key, the module refuses the keys of the recovery's sign-in, the agent downloads
the master key (0800/401), loads it into the module and the purchase is approved.
Exit 0 when the story completed as told.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from agent import timeline
from agent.config import build
from agent.journal import Journal
from agent.keys.tmk_download import EVENT as TMK_DOWNLOAD
from agent.recovery.policy import State
from agent.selfcheck import NAMES, run_checks
from agent.selfcheck.base import Text
from agent.selfcheck.report import finding_code
from agent.service.assembly import Agent
from agent.service.daemon import sign_in_at_start
from agent.sim.module import TEST_TRANSPORT_KEY, TEST_TUSN_KEY
from agent.sim.site import MID, TID, Site, simulated_site
from agent.wire import codes
from agent.wire.frame import with_length
from agent.wire.mac import DES_FAMILY, require_software_des
from agent.wire.message import Message, decode_message, encode_message
from agent.wire.pin import pin_pan
from drivers.framing import Frame, FrameParser
from drivers.module import Command, encode_pin_request

SUPPORT = "95516"
PAN = "6217001234567890123"  # a test card number: the journal and this output keep 6 + 4
# What the simulated acquirer answers a purchase whose TUSN it has not reported: the same 97 a
# terminal it does not know gets, which is why recovery must decide whose refusal it is
TUSN_REFUSAL = "97"
# the master key the acquirer rotates the terminal to: a test key, not the module's; the demo
# shows only its KCV
ROTATED_TMK = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")


class StoryBroken(Exception):
    """A step did not turn out as the story says."""


def _app_purchase(amount_fen: int, stan: int) -> Message:
    """What a payment app sends: no TID/MID, no MAC; the agent adds them."""
    return Message(
        "0200",
        {2: PAN, 3: "000000", 4: f"{amount_fen:012d}", 11: f"{stan:06d}", 14: "2812",
         22: "022", 25: "00", 49: "156", 60: "22000000"},
    )  # fmt: skip


def _app_balance_inquiry(stan: int) -> Message:
    """A balance inquiry: a kind of request that carries no field 59 A2 under the CUP rules."""
    request = _app_purchase(0, stan)
    del request.fields[4]
    request.fields.update({3: "310000", 60: "01000000"})
    return request


async def _send(socket: Path, message: Message) -> Message:
    reader, writer = await asyncio.open_unix_connection(str(socket))
    try:
        writer.write(with_length(encode_message(message)))
        await writer.drain()
        length = int.from_bytes(await reader.readexactly(2), "big")
        return decode_message(await reader.readexactly(length))
    finally:
        writer.close()


async def _pay(socket: Path, amount_fen: int, stan: int) -> Message:
    return await _send(socket, _app_purchase(amount_fen, stan))


async def _pin_block(module_socket: Path) -> bytes:
    """The PIN block the payment app gets from the module's keypad, through the agent."""
    reader, writer = await asyncio.open_unix_connection(str(module_socket))
    try:
        request = encode_pin_request(0, pin_pan(PAN), 30)
        writer.write(Frame(1, Command.PIN_BLOCK, request).encode())
        await writer.drain()
        head = await reader.readexactly(3)
        body = await reader.readexactly(int.from_bytes(head[1:], "big") + 3)
        [answer] = FrameParser().feed(head + body)
    finally:
        writer.close()
    _expect(isinstance(answer, Frame) and answer.data[:1] == b"\x00", "no PIN block came")
    assert isinstance(answer, Frame)
    return answer.data[1:]


def _say(text: str = "") -> None:
    print(text, flush=True)


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise StoryBroken(what)


def _answer(response: Message) -> str:
    code = response.text(39)
    rc = codes.lookup(code)
    return f"{code} {rc.zh} / {rc.en}"


def _bilingual(text: Text, indent: str = "     ") -> None:
    _say(f"{indent}{text.zh}")
    _say(f"{indent}{text.en}")


def _screen(message: Text) -> None:
    _say("   on the terminal's screen (the display-message hook):")
    _bilingual(message)


async def _timeline(journal: Journal, since: float, timed: bool = False) -> list[dict[str, Any]]:
    """Print what the journal noted since ``since`` (epoch seconds), one line each; ``timed``:
    with the times, as ``agent journal`` shows it. The entries, for the chapter to check."""
    entries = await journal.run(timeline.entries, journal, since)
    lines = timeline.render(entries).splitlines() if timed else [e["text"] for e in entries]
    for line in lines:
        _say(f"   {line}")
    return entries


async def _story(folder: Path) -> None:
    async with simulated_site(folder) as site:
        site.provision_in_tms([site.host_address])
        settings = site.agent_settings(folder)
        settings["terminal"]["support_phone"] = SUPPORT
        settings["host"]["response_timeout"] = 5
        settings["recovery"] = {"probe_first": 60}
        # the acquirer offers a remote master-key download (chapter 7); nothing else uses it
        # while the module's master key is the host's
        settings["keys"] = {"tmk_download": "0800-401"}
        agent = Agent(build(settings, "demo", env={}))
        try:
            await _tell(site, agent, folder / "agent.sock")
        finally:
            await agent.close()


async def _tell(site: Site, agent: Agent, socket: Path) -> None:
    host = site.host
    journal = agent.journal
    await agent.app_socket.serve(socket)
    module_socket = socket.with_name("module.sock")
    await agent.module_proxy.serve(module_socket)
    _say(f"Simulators: acquirer host {site.host_address}, TMS {site.tms_url}, card module on "
         f"{site.module_path}")  # fmt: skip
    _say(f"Terminal TID {TID}, MID {MID}; the payment app talks to {socket}")

    _say("\n1. The agent signs in (签到): 0800 -> 0810, working keys into the card module")
    for _ in range(3):  # as the daemon's later attempts would, on a machine that is busy
        await sign_in_at_start(agent)
        if await journal.run(journal.last_signin) is not None:
            break
    signed = await journal.run(journal.last_signin)
    _expect(signed is not None, "the sign-in at start failed")
    assert signed is not None
    _say(f"   signed in, scheme {signed['scheme']}, KCVs {signed['kcvs']}")

    _say("\n2. A purchase of 12.34 CNY")
    response = await _pay(socket, 1234, 1)
    _say(f"   answer: {_answer(response)}")
    _expect(response.text(39) == "00", "the first purchase was not approved")

    _say("\n2a. A purchase of 88.00 CNY with a PIN: the cardholder types it on the module's keypad")
    _say(f"    (the app asks through {module_socket.name}; neither the app nor the agent sees it)")
    purchase = _app_purchase(8800, 2)
    block = await _pin_block(module_socket)
    purchase.fields.update({22: "021", 26: "12", 52: block, 53: "2600000000000000"})
    response = await _send(socket, Message("0200", dict(sorted(purchase.fields.items()))))
    verified = host.state()["pins_verified"]
    _say(f"   answer: {_answer(response)}; the host checked the PIN under its PIK: {verified}")
    _expect(response.text(39) == "00" and verified == 1, "the PIN purchase was not approved")

    _say("\n2b. The merchant voids the first purchase by its receipt number (STAN 000001)")
    void = _app_purchase(1234, 3)
    void.fields.update({3: "200000", 60: "23000000", 61: "000000000001"})
    response = await _send(socket, void)
    _say(f"   answer: {_answer(response)}; the agent named the original by the host's STAN")
    voided = [p for p in host.state()["purchases"].values() if p.get("voided")]
    _expect(response.text(39) == "00" and len(voided) == 1, "the void did not reach its original")

    _say("\n3. The host loses the terminal's session (a host-side fault), and the next "
         "purchase of 56.78 CNY gets 97")  # fmt: skip
    host.forget(TID)
    mark = time.time()
    response = await _pay(socket, 5678, 4)
    await _timeline(journal, mark)
    _say(f"   answer to the app: {_answer(response)}")
    _expect(response.text(39) == "00", "the purchase after the 97 was not approved")

    _say("\n4. The acquirer cancels the terminal; a purchase of 9.00 CNY")
    host.set_status(TID, "cancelled")
    mark = time.time()
    response = await _pay(socket, 900, 5)
    await _timeline(journal, mark)
    _say(f"   answer to the app: {_answer(response)}")
    _expect(agent.recovery.state is State.UNREGISTERED, "the terminal did not become unregistered")
    assert agent.recovery.message is not None
    _screen(agent.recovery.message)
    sent = host.state()["requests"].get("0200", 0)
    response = await _pay(socket, 900, 6)
    _expect(host.state()["requests"].get("0200", 0) == sent, "the host got a purchase")
    _say(f"   the next purchase is answered at once, without host traffic: "
         f"{response.text(39)}, {response.text(63)[:60]}...")  # fmt: skip

    _say("\n5. The journal (agent journal)")
    await _timeline(journal, 0.0, timed=True)

    await _tusn_chapter(site, agent, socket)
    await _tmk_chapter(site, agent, socket)


async def _tusn_chapter(site: Site, agent: Agent, socket: Path) -> None:
    """The acquirer refuses a purchase for its TUSN: the request's refusal, not the terminal's
    (DESIGN.md section 7 point 4, section 17)."""
    host, journal, recovery = site.host, agent.journal, agent.recovery
    tusn = site.module_port.simulator.state.tusn
    mark = time.time()
    _say("\n6. The acquirer checks the terminal hardware serial number (TUSN, 终端硬件序列号) "
         "in field 59 A2")  # fmt: skip
    # chapter 4 left the terminal cancelled and unregistered: a TUSN refusal needs a terminal
    # the acquirer knows, so it reinstates it and a technician signs in
    host.set_status(TID, "active")
    await recovery.sign_in("a technician's sign-in succeeded")  # as agent signin does
    _expect(recovery.state is State.REGISTERED, "the technician's sign-in did not register")
    _say(f"   the acquirer reinstates the terminal; a technician signs in (agent signin): "
         f"{recovery.state.value} again")  # fmt: skip
    host.report_tusn(TID, tusn, reported=False)
    host.set_tusn_check(True, TUSN_REFUSAL, TEST_TUSN_KEY)
    _say(f"   the acquirer now checks A2 on purchases; it has not reported TUSN {tusn} to "
         "UnionPay (未报备)")  # fmt: skip

    _say("\n6a. A purchase of 23.45 CNY: the agent adds A2 through the card module, the "
         "acquirer refuses it")  # fmt: skip
    response = await _pay(socket, 2345, 7)
    cause = response.text(63, "")
    _say(f"   answer to the app: {_answer(response)}")
    _say(f"   field 63: {cause}")
    _expect(
        response.text(39) == TUSN_REFUSAL
        and cause.startswith("AGENT registration.tusn-refused:")
        and tusn in cause,
        f"the app's answer does not name TUSN {tusn} as the cause: {response.text(39)} {cause}",
    )
    reasons = host.state()["tusn_refusals"]
    _say(f"   the acquirer's refusals (the purchase, and its retry after a sign-in), by reason: "
         f"{reasons}")  # fmt: skip
    _expect(
        isinstance(reasons, dict) and set(reasons) == {"tusn-not-reported"},
        f"the acquirer refused the purchase for something else than its TUSN: {reasons}",
    )
    refusals = recovery.refused_requests
    _say(f"   the terminal stays {recovery.state.value}; agent status counts the refused "
         f"requests: {dict(refusals.by_finding)}")  # fmt: skip
    _expect(recovery.state is State.REGISTERED, "the TUSN refusal unregistered the terminal")
    told = (refusals.last or {}).get("message")
    _expect(isinstance(told, dict), "recovery did not count the refused purchase")
    assert isinstance(told, dict)
    _screen(Text(told["en"], told["zh"]))
    response = await _send(socket, _app_balance_inquiry(8))
    _say(f"   a balance inquiry (it carries no A2) is still answered: {_answer(response)}")
    _expect(response.text(39) == "00", "the balance inquiry after the refusal was not approved")

    _say("\n6b. The technician's self-check (agent selftest) names the cause")
    report = await run_checks(agent.remedies.check_context(), ["registration"])
    check = report.get("registration")
    _expect(
        check is not None and finding_code(check) == "registration.tusn-refused" and check.remedy,
        f"the registration check did not find the TUSN refusal: {check}",
    )
    assert check is not None and check.remedy is not None
    name = NAMES[check.id]
    _say(f"   {name.en} ({name.zh}): {check.status.value}, finding {finding_code(check)}")
    _bilingual(check.summary)
    _say("   remedy (处理):")
    _bilingual(check.remedy)

    _say(f"\n6c. The acquirer reports TUSN {tusn} (报备); the merchant takes the 23.45 CNY again")
    host.report_tusn(TID, tusn)
    response = await _pay(socket, 2345, 9)
    _say(f"   answer: {_answer(response)}")
    _expect(response.text(39) == "00", "the purchase after the TUSN was reported was refused")

    _say("\n6d. The journal of this chapter (agent journal --since ...)")
    entries = await _timeline(journal, mark, timed=True)
    _expect(
        any(entry["kind"] == "request-refused" for entry in entries),
        "the journal has no request-refused event",
    )


async def _module_tmk_kcv(agent: Agent) -> str:
    """The KCV of the master key in the agent's slot, as the module reports it."""
    slot = agent.settings().module.key_slot
    return (await asyncio.to_thread(agent.module.key_status, slot))["TMK"].kcv_hex


async def _tmk_chapter(site: Site, agent: Agent, socket: Path) -> None:
    """A module whose master key is not the acquirer's (a module swapped, a key rotated)
    recovers without a technician (DESIGN.md section 18): ``keys.tmk_download = "0800-401"``."""
    host, journal, recovery = site.host, agent.journal, agent.recovery
    tusn = site.module_port.simulator.state.tusn
    rotated = DES_FAMILY.kcv(ROTATED_TMK).hex().upper()
    mark = time.time()
    _say("\n7. A module whose master key (TMK, 主密钥) is not the acquirer's (a module swapped, "
         "a key rotated) recovers without a technician")  # fmt: skip
    before = await _module_tmk_kcv(agent)
    # the acquirer registers the terminal anew with another master key: its sessions under
    # the old one end, and the TUSN it reported in chapter 6 stays reported
    host.register(TID, MID, ROTATED_TMK)
    host.report_tusn(TID, tusn)
    host.forget(TID)
    _say(f"   the acquirer rotates the terminal's master key: KCV {rotated}; the module's is "
         f"{before}")  # fmt: skip
    _expect(before != rotated, "the module already has the acquirer's new master key")

    _say("\n7a. A purchase of 34.56 CNY: 97; the module refuses the keys of the sign-in, the "
         "agent downloads the master key (0800/401)")  # fmt: skip
    downloads = host.tmk_downloads
    response = await _pay(socket, 3456, 10)
    _say(f"   answer to the app: {_answer(response)}")
    _expect(response.text(39) == "00", "the purchase after the master-key download was refused")
    after = await _module_tmk_kcv(agent)
    _say(f"   the module's master key now: KCV {after}; 0800/401 answered by the acquirer: "
         f"{host.tmk_downloads - downloads}; the terminal is {recovery.state.value}")  # fmt: skip
    _expect(after == rotated, f"the module's master key is KCV {after}, not {rotated}")
    _expect(host.tmk_downloads == downloads + 1, "the acquirer did not answer one 0800/401")
    _expect(recovery.state is State.REGISTERED, "the terminal is not registered")

    _say("\n7b. The journal of this chapter (agent journal --since ...)")
    entries = await _timeline(journal, mark, timed=True)
    events = await journal.run(journal.events, mark)
    remedies = [(e["remedy"], e["ok"]) for e in events if e["kind"] == "recovery.remedy"]
    _expect(
        remedies == [("sign-in", False), ("tmk-download", True)],
        f"not a sign-in the module refused, then the download: {remedies}",
    )
    loaded = [(e["outcome"], e["kcv"]) for e in events if e["kind"] == TMK_DOWNLOAD]
    _expect(
        loaded == [("loaded", rotated)],
        f"the journal has no {TMK_DOWNLOAD} event that loaded KCV {rotated}: {loaded}",
    )
    # the agent carries the key only under the transport key, and journals its KCV only
    ciphertext = DES_FAMILY.cipher(TEST_TRANSPORT_KEY).encrypt(ROTATED_TMK)
    text = "\n".join(e["text"] for e in entries).upper()
    _expect(
        all(secret.hex().upper() not in text for secret in (ROTATED_TMK, ciphertext)),
        "the journal shows the master key or its ciphertext",
    )


def run_demo(verbose: bool = False) -> int:
    require_software_des()  # the simulators issue and use keys in software
    logging.basicConfig(level=logging.INFO if verbose else logging.CRITICAL)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pos-agent-demo-") as folder:
        try:
            asyncio.run(_story(Path(folder)))
        except StoryBroken as exc:
            _say(f"\nThe demo did not go as told: {exc}")
            return 1
    _say(f"\nThe story completed in {time.monotonic() - started:.1f} s.")
    return 0
