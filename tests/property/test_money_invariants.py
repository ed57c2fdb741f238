"""The money rules as properties (DESIGN.md sections 8 and 10), hunted by a seeded generator:
interleavings of sales, app repeats (also while the first is in flight), apps that leave before
their answer, the app's own reversals and voids, late, lost, stray, forged and MAC-less answers
and timeouts, against the host simulator's ledger over real sockets. After every run:

- every sale the app was told approved is live at the host, exactly once;
- every other sale is not live (reversed, or never charged).

A fixed budget of seeds runs in CI; ``POS_AGENT_FUZZ=long`` runs many more. A failing seed
names itself, and its operations are printed, so it can be replayed alone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from dataclasses import dataclass, field

import pytest

from agent.recovery.remedies import RemedyFailed
from agent.transaction.reversals import ReversalPending, ReversalRefused
from agent.wire.message import Message
from tests.integration.gateway_rig import (
    app_purchase,
    exchange,
    gateway_rig,
    reversal_of,
    send_and_leave,
    void_of,
)

SEEDS = range(1, 201) if os.environ.get("POS_AGENT_FUZZ") == "long" else range(1, 7)
OPERATIONS = 24
TIMEOUT = 0.3  # the host's response timeout in these runs
CARDS = ("6217001234567890123", "6222021234567890128")
# what the host does to the next request, and how likely it is
FAULTS = (
    (None, 10),
    ("late-in-time", 2),  # answered within the timeout
    ("late-too-late", 2),  # answered after it: a late approval
    ("no-answer", 1),
    ("stray-tid", 2),
    ("stray-mti", 2),
    ("refused-first", 1),
    ("wrong-mac", 1),
    ("close", 1),
)


@dataclass
class Ledger:
    """What the app saw: approvals it was given (by RRN), sales it voided or reversed."""

    approved: dict[str, str] = field(default_factory=dict)  # RRN -> what told it so
    withdrawn: set[str] = field(default_factory=set)  # RRNs the app voided or reversed
    sales: list[Message] = field(default_factory=list)  # requests the app may repeat
    log: list[str] = field(default_factory=list)


def _card(message: Message, pan: str) -> Message:
    fields = dict(message.fields)
    fields[2], fields[35] = pan, pan + "=28121010000000000"
    return Message(message.mti, fields)


def _fault(rig, rng: random.Random) -> str | None:
    kinds, weights = zip(*FAULTS, strict=True)
    kind = rng.choices(kinds, weights)[0]
    if kind == "late-in-time":
        rig.server.faults.add("late", delay=TIMEOUT / 3)
    elif kind == "late-too-late":
        rig.server.faults.add("late", delay=TIMEOUT * 1.5)
    elif kind in ("stray-tid", "stray-mti"):
        rig.server.faults.add(kind, delay=0.02)
    elif kind is not None:
        rig.server.faults.add(kind)
    return kind


async def _leave(rig, message: Message) -> None:
    """The app sends and is gone before any answer can come (the host takes its time)."""
    rig.server.faults.add("late", delay=0.05)
    await send_and_leave(rig.socket, message)


def _told(ledger: Ledger, what: str, answer: Message) -> None:
    ledger.log.append(f"{what} -> {answer.text(39)} RRN {answer.text(37, '-')}")
    if answer.mti == "0210" and answer.text(3, "").startswith("00") and answer.text(39) == "00":
        ledger.approved[answer.text(37)] = what


async def _operation(rig, rng: random.Random, ledger: Ledger, number: int) -> None:
    choice = rng.random()
    fault = _fault(rig, rng)
    what = f"#{number} fault {fault}"
    if choice < 0.40 or not ledger.sales:  # a new sale
        sale = _card(app_purchase(rng.choice((100, 200, 300))), rng.choice(CARDS))
        ledger.sales.append(sale)
        _told(ledger, f"{what} sale STAN {sale.text(11)}", await exchange(rig.socket, sale))
    elif choice < 0.55:  # the app repeats an earlier sale (the same request, or another card)
        sale = rng.choice(ledger.sales)
        if rng.random() < 0.3:
            sale = _card(sale, rng.choice(CARDS))
        _told(ledger, f"{what} repeat STAN {sale.text(11)}", await exchange(rig.socket, sale))
    elif choice < 0.67:  # a sale and its repeat at once
        sale = _card(app_purchase(rng.choice((100, 200))), rng.choice(CARDS))
        ledger.sales.append(sale)
        answers = await asyncio.gather(exchange(rig.socket, sale), exchange(rig.socket, sale))
        for answer in answers:
            _told(ledger, f"{what} twin STAN {sale.text(11)}", answer)
    elif choice < 0.79:  # the app leaves before its answer (a new sale, or a repeat)
        rig.server.faults.clear()
        sale = rng.choice(ledger.sales) if rng.random() < 0.5 else app_purchase(400)
        ledger.sales.append(sale)
        ledger.log.append(f"#{number} leave STAN {sale.text(11)}")
        await _leave(rig, sale)
        await asyncio.sleep(0.1)
    elif choice < 0.90:  # the app reverses one of its sales (0400)
        sale = rng.choice(ledger.sales)
        _withdraw(rig, ledger, sale)  # asked for, whatever the answer: the app's own undoing
        answer = await exchange(rig.socket, reversal_of(sale))
        ledger.log.append(f"{what} reversal STAN {sale.text(11)} -> {answer.text(39)}")
    else:  # the app voids one of its sales
        sale = rng.choice(ledger.sales)
        batch = f"{rig.agent.journal.batch:06d}"
        void = void_of(int(sale.text(11)), int(sale.text(4)), batch=batch)
        answer = await exchange(rig.socket, void)
        ledger.log.append(f"{what} void of STAN {sale.text(11)} -> {answer.text(39)}")
        if answer.text(39) == "00":
            _withdraw(rig, ledger, sale)


def _withdraw(rig, ledger: Ledger, sale: Message) -> None:
    """The app voided or reversed ``sale``: whatever the host approved under that app STAN
    (the latest one the agent sent, which the reference names) is the app's own undoing."""
    wire = rig.agent.journal.wire_stan(sale.text(11))
    if wire is None:
        return
    key = f"{rig.config.terminal.tid}/{wire[1]}/{wire[0]}"
    charge = rig.host.state()["purchases"].get(key)
    if charge is not None:
        ledger.withdrawn.add(charge["rrn"])


async def _settle(rig) -> None:
    """No fault left, every late answer in, every queued reversal closed."""
    rig.server.faults.clear()
    await asyncio.sleep(TIMEOUT * 2)
    for _ in range(40):
        await asyncio.gather(*rig.agent.reversals._judging)
        if not rig.agent.journal.has_queued_reversals:
            return
        try:
            await rig.agent.reversals.send()
        except ReversalRefused:  # the host lost the session: the service would sign in
            with contextlib.suppress(RemedyFailed):
                await rig.agent.recovery.sign_in("the service would")
        except ReversalPending:
            await asyncio.sleep(0.05)
    raise AssertionError("reversals still queued after settling")


def _breaches(rig, ledger: Ledger) -> list[str]:
    charges = [p for p in rig.host.state()["purchases"].values() if p["processing"] == "000000"]
    by_rrn: dict[str, list[dict]] = {}
    for charge in charges:
        by_rrn.setdefault(charge["rrn"], []).append(charge)
    found = []
    for rrn, what in ledger.approved.items():
        if rrn in ledger.withdrawn:
            continue
        live = [c for c in by_rrn.get(rrn, []) if not c["reversed"] and not c.get("voided")]
        if len(live) != 1:
            found.append(f"told approved ({what}) but {len(live)} live charges with RRN {rrn}")
    for charge in charges:
        if charge["reversed"] or charge.get("voided") or charge["rrn"] in ledger.withdrawn:
            continue
        if charge["rrn"] not in ledger.approved:
            found.append(f"a live charge the app was never told approved: {charge}")
    return found


@pytest.mark.parametrize("seed", SEEDS)
def test_money_invariants_hold_under_random_interleavings(tmp_path, seed) -> None:
    rng = random.Random(seed)
    ledger = Ledger()

    async def scenario():
        async with gateway_rig(tmp_path, response_timeout=TIMEOUT) as rig:
            for number in range(OPERATIONS):
                await _operation(rig, rng, ledger, number)
            await _settle(rig)
            return _breaches(rig, ledger)

    breaches = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert not breaches, f"seed {seed}:\n" + "\n".join([*breaches, "--", *ledger.log])
