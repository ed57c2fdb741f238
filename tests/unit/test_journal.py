import contextlib
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.journal import MIGRATIONS, STAN_OPEN, Journal, JournalDamaged, JournalError
from agent.wire.builders import Card, Terminal, purchase_request, response_to
from agent.wire.message import Message
from tests.conftest import fill_disk

PAN = "6217001234567890123"
TRACK2 = PAN + "=28121010000000000"
PIN = bytes.fromhex("A1B2C3D4E5F60718")
TERMINAL = Terminal("10000001", "898100012340001")


def purchase(stan: int = 1) -> Message:
    card = Card(pan=PAN, expiry="2812", track2=TRACK2, pin_block=PIN,
                icc_data=bytes.fromhex("5A0A") + bytes.fromhex(PAN + "F"))  # fmt: skip
    return purchase_request(TERMINAL, stan=stan, batch=1, amount_fen=1234, card=card)


@pytest.fixture
def journal(tmp_path) -> Journal:
    j = Journal(tmp_path / "journal.sqlite3")
    yield j
    j.close()


def test_wal_full_sync_and_schema(journal, tmp_path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "journal.sqlite3")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert journal.schema_version == len(MIGRATIONS)
    journal.close()
    again = Journal(tmp_path / "journal.sqlite3")
    assert again.schema_version == len(MIGRATIONS)  # reopening migrates nothing
    again.close()


def test_migration_from_schema_2_keeps_transactions_outside_the_stan_map(tmp_path) -> None:
    """A journal of the previous release: its rows stay, with no app STAN (nothing refers to
    them by the app's numbers) and no answer to replay."""

    path = tmp_path / "journal.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + ";" + MIGRATIONS[1] + "; PRAGMA user_version = 2;")
    db.execute(
        "INSERT INTO transactions (created_at, updated_at, mti, stan, state, request) "
        "VALUES (1.0, 1.0, '0200', '000007', 'completed', '{}')"
    )
    db.commit()
    db.close()
    journal = Journal(path)
    assert journal.schema_version == len(MIGRATIONS)
    assert [t["stan"] for t in journal.transactions()] == ["000007"]
    assert journal.wire_stan("000007") is None
    journal.close()


def test_the_stan_map_and_replay(tmp_path) -> None:
    uptime = [5_000.0]
    journal = Journal(tmp_path / "journal.sqlite3", monotonic=lambda: uptime[0])
    purchase = Message("0200", {2: "6217001234567890123", 3: "000000", 4: "000000001000"})
    purchase.fields[11] = journal.take_stan()
    transaction = journal.begin(purchase, financial=True, app_stan="000901", replay_key="k")
    answer = Message("0210", {2: "6217001234567890123", 11: "000901", 38: "123456", 39: "00"})
    journal.finish(transaction, "completed", answer, answer=answer)
    assert journal.wire_stan("000901") == (purchase.text(11), "000001")
    assert journal.wire_stan("000901", "000002") is None
    replayed = journal.replay("000901", "k", 120)
    # no PAN kept
    assert replayed == (transaction, Message("0210", {11: "000901", 38: "123456", 39: "00"}))
    assert journal.replay("000901", "other", 120) is None
    assert journal.replay("000901", "k", -1) is None  # outside the window
    uptime[0] += 121
    assert journal.replay("000901", "k", 120) is None  # the window passed on the monotonic clock
    uptime[0] -= 121
    journal.no_longer_replayable(purchase.text(11), "000001", "voided")
    assert journal.replay("000901", "k", 120) is None  # voided: no longer true
    with contextlib.closing(sqlite3.connect(tmp_path / "journal.sqlite3")) as db:
        rows = db.execute("SELECT answer FROM transactions").fetchall()
    assert "6217001234567890123" not in str(rows)
    journal.close()


@pytest.mark.parametrize(
    ("icc", "replayed"),
    [
        ("910A01020304050607083030720A9F180400000001860100", True),  # issuer data, a script
        ("5A0862170012345678909F2701809F26081122334455667788", False),  # the card's PAN
        ("710F57066217001234569F180400000001", False),  # a track equivalent inside a script
        ("91FF01", False),  # not TLV
    ],
    ids=["issuer", "pan", "nested track", "not tlv"],
)
def test_a_hosts_field_55_is_replayed_unless_it_holds_card_data(
    tmp_path, icc: str, replayed: bool
) -> None:
    """The issuer's authentication data and scripts (91, 71, 72) in the answer are what the
    app's EMV kernel needs for its second GENERATE AC: a repetition gets them again. IC data
    carrying card data is never kept."""
    journal = Journal(tmp_path / "journal.sqlite3")
    purchase = Message("0200", {3: "000000", 4: "000000001000", 11: journal.take_stan()})
    transaction = journal.begin(purchase, financial=True, app_stan="000901", replay_key="k")
    answer = Message("0210", {11: "000901", 39: "00", 55: bytes.fromhex(icc)})
    journal.finish(transaction, "completed", answer, answer=answer)
    _, again = journal.replay("000901", "k", 120)
    assert again.get(55) == (bytes.fromhex(icc) if replayed else None)
    with contextlib.closing(sqlite3.connect(tmp_path / "journal.sqlite3")) as db:
        rows = str(db.execute("SELECT answer FROM transactions").fetchall())
    assert "6217001234" not in rows and "62170012345678909" not in rows
    journal.close()


def test_migration_from_schema_1_keeps_rows(tmp_path) -> None:
    """A journal written by the first release: its sign-in survives, with the new columns."""

    path = tmp_path / "journal.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    db.execute("INSERT INTO signins (at, scheme, kcvs, host_time) VALUES (1.0, '003', '{}', NULL)")
    db.commit()
    db.close()
    journal = Journal(path)
    assert journal.schema_version == len(MIGRATIONS)
    assert journal.last_signin() == {
        "at": 1.0, "scheme": "003", "kcvs": {}, "host_time": None, "tid": "", "mid": "",
        "refused": {},
    }  # fmt: skip
    journal.close()


def test_newer_schema_is_refused(tmp_path) -> None:
    path = tmp_path / "journal.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(JournalError, match="has schema 99, newer than this agent knows"):
        Journal(path)


def test_corrupt_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalDamaged, match=f"journal {path} is damaged: file is not a database"):
        Journal(path)
    # the service moves it aside whole and starts afresh
    journal = Journal.open_for_service(path)
    [aside] = tmp_path.glob("journal.sqlite3.damaged-*")
    assert aside.read_bytes() == b"this is not a database" * 100
    assert [e["kind"] for e in journal.events()] == ["journal-damaged"]
    journal.close()


def test_a_damaged_journal_whose_fresh_one_could_not_begin_is_told_at_the_next_try(
    tiny_disk: Path,
) -> None:
    """The damaged journal is moved aside, but the fresh one cannot begin (the disk is full):
    the next try, once there is room, still numbers from a random STAN (the host knows that
    batch's) and records the journal-damaged event."""
    path = tiny_disk / "journal.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    fill_disk(tiny_disk)
    with pytest.raises(JournalError):
        Journal.open_for_service(path)
    [aside] = tiny_disk.glob("journal.sqlite3.damaged-*")
    (tiny_disk / "filler").unlink()
    journal = Journal.open_for_service(path)
    [event] = journal.events()
    assert (event["kind"], event["moved_to"]) == ("journal-damaged", str(aside))
    assert journal.next_stan() != 1  # 1 in a million: the random start was 0
    journal.close()
    journal = Journal.open_for_service(path)  # the next start: told once
    assert [e["kind"] for e in journal.events()] == ["journal-damaged"]
    journal.close()


def test_a_fresh_journal_that_cannot_record_its_damaged_start_is_begun_again(
    tmp_path, monkeypatch
) -> None:
    """The disk refuses the fresh journal's first write (the random STAN and the event): the
    fresh file is removed, not left to be taken at the next start for a journal that began
    well (STANs from 1, the damaged copy untold); the next try begins it and tells it. (The
    disk filling at exactly that write is what the refusal stands for.)"""
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    save_stan = Journal._save_stan

    def full(self, db):
        raise JournalError(f"journal {path} write failed: database or disk is full")

    monkeypatch.setattr(Journal, "_save_stan", full)
    with pytest.raises(JournalError, match="disk is full"):
        Journal.open_for_service(path)
    assert not path.exists()
    monkeypatch.setattr(Journal, "_save_stan", save_stan)
    journal = Journal.open_for_service(path)
    assert [e["kind"] for e in journal.events()] == ["journal-damaged"]
    journal.close()


def test_stan_counts_wraps_and_skips_open_stans(journal) -> None:
    assert [journal.next_stan() for _ in range(3)] == [1, 2, 3]
    journal.begin(purchase(stan=1), financial=True)  # STAN 000001 is now open
    journal._stan = 999_998
    assert journal.next_stan() == 999_999
    assert journal.take_stan() == "000002"  # 1 is skipped while its transaction is open


def test_a_taken_stan_is_durable_with_the_request_that_carries_it(tmp_path) -> None:
    """The gateway MACs a request before the journal records it: the STAN it takes is kept in
    memory until the request's own row makes it durable, never a disk sync of its own."""
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path)
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    request = purchase()
    request.fields[11] = journal.take_stan()
    assert request.text(11) == "000001" and "COMMIT" not in statements
    assert journal.take_stan() == "000002"  # taken, never recorded: not taken again this run
    journal.begin(request, financial=True)
    assert statements.count("COMMIT") == 1
    journal.close()
    journal = Journal(path)  # the counter on disk is the last taken, not the request's own
    [row] = journal.transactions()
    assert row["stan"] == "000001"
    assert journal.take_stan() == "000003"
    journal.close()


def test_a_stan_taken_but_never_recorded_may_be_taken_after_a_restart(tmp_path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path)
    assert journal.take_stan() == "000001"
    journal.close()
    journal = Journal(path)
    assert journal.take_stan() == "000001"  # nothing was sent with it
    journal.close()


def test_concurrent_threads_get_distinct_stans(journal) -> None:
    """The gateway journals from worker threads: steps from many threads stay whole."""

    def record(_: int) -> str:
        request = purchase()
        request.fields[11] = journal.take_stan()
        journal.begin(request, financial=True)
        return request.text(11)

    with ThreadPoolExecutor(8) as pool:
        stans = list(pool.map(record, range(200)))
    assert sorted(stans) == [f"{n:06d}" for n in range(1, 201)]
    assert len(journal.transactions()) == 200


def test_queued_reversals_are_known_without_a_query(journal, tmp_path) -> None:
    assert not journal.has_queued_reversals
    first = journal.begin(purchase(1), financial=True)
    journal.finish(first, "timed-out", reversal_reason="98")
    journal.begin(purchase(2), financial=True)  # left pending: a crash
    assert journal.has_queued_reversals
    journal.close()
    reopened = Journal(tmp_path / "journal.sqlite3")
    assert reopened.has_queued_reversals  # counted from the file at start
    assert reopened.recover_pending() == 1
    queued = reopened.queued_reversals()
    assert len(queued) == 2
    for reversal in queued:
        reopened.reversal_closed(reversal.id, Message("0410", {39: "00"}), "confirmed")
        # twice: no-op
        reopened.reversal_closed(reversal.id, Message("0410", {39: "00"}), "confirmed")
    assert not reopened.has_queued_reversals
    reopened.close()


def test_completed_transaction(journal) -> None:
    request = purchase(7)
    tid = journal.begin(request, financial=True)
    assert journal.transactions()[0]["state"] == "pending"
    journal.finish(tid, "completed", response_to(request, "00"))
    row = journal.transactions()[0]
    assert (row["state"], row["response_code"]) == ("completed", "00")
    assert journal.queued_reversals() == []


def test_timeout_queues_reversal_without_card_data(journal) -> None:
    request = purchase(8)
    tid = journal.begin(request, financial=True)
    journal.finish(tid, "timed-out", detail="no response in 30 s", reversal_reason="98")
    [reversal] = journal.queued_reversals()
    assert reversal.reason == "98" and reversal.transaction_id == tid
    assert reversal.message.fields == {
        n: request.fields[n] for n in (3, 4, 11, 22, 25, 41, 42, 49, 60)
    }
    journal.reversal_attempted(reversal.id, "host down")
    assert journal.queued_reversals()[0].attempts == 1
    journal.reversal_closed(reversal.id, Message("0410", {39: "00"}), "confirmed")
    assert journal.queued_reversals() == []
    assert [e["kind"] for e in journal.events()] == ["reversal-queued", "reversal-confirmed"]


def test_reversal_counts_tell_queued_from_stuck(journal) -> None:
    assert journal.reversal_counts(3) == (0, 0)
    for stan in (8, 9):
        tid = journal.begin(purchase(stan), financial=True)
        journal.finish(tid, "timed-out", detail="no response", reversal_reason="98")
    first, _ = journal.queued_reversals()
    for _ in range(3):
        journal.reversal_attempted(first.id, "host down")
    assert journal.reversal_counts(3) == (2, 1)
    assert journal.reversal_counts(4) == (2, 0)
    journal.reversal_closed(first.id, Message("0410", {39: "00"}), "confirmed")
    assert journal.reversal_counts(3) == (1, 0)


def test_pending_at_start_becomes_reversal(tmp_path) -> None:
    path = tmp_path / "journal.sqlite3"
    first = Journal(path)
    first.begin(purchase(9), financial=True)
    first.begin(Message("0820", {11: "000010", 41: "10000001"}), financial=False)
    first.close()  # as if the process died here
    again = Journal(path)
    assert again.recover_pending() == 1
    assert [r.reason for r in again.queued_reversals()] == ["98"]
    assert {t["state"] for t in again.transactions()} == {"interrupted"}
    assert again.recover_pending() == 0
    again.close()


def test_no_card_data_anywhere_in_the_file(journal, tmp_path) -> None:
    request = purchase(11)
    tid = journal.begin(request, financial=True)
    journal.finish(tid, "timed-out", reversal_reason="98")
    journal.record_signin("003", {"PIK": "AAAAAAAA", "MAK": "BBBBBBBB"}, "1125120000")
    journal.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for secret in (PAN.encode(), TRACK2.encode(), PIN.hex().encode(), PIN.hex().upper().encode(),
                   PIN, bytes.fromhex(PAN + "F"), b"2812"):  # fmt: skip
        assert secret not in raw
    assert b"621700*********0123" in raw


def test_signin_record(journal) -> None:
    assert journal.last_signin() is None
    journal.record_signin("003", {"PIK": "11111111", "MAK": "22222222"}, "1125093000")
    last = journal.last_signin()
    assert last["kcvs"] == {"PIK": "11111111", "MAK": "22222222"} and last["scheme"] == "003"


def test_full_disk_is_a_clear_error_and_loses_nothing(tiny_disk: Path) -> None:
    journal = Journal(tiny_disk / "journal.sqlite3")
    kept = journal.begin(purchase(1), financial=True)
    fill_disk(tiny_disk)
    with pytest.raises(JournalError, match="write failed: database or disk is full"):
        for stan in range(2, 500):
            journal.begin(purchase(stan), financial=True)
            journal.event("filler", note=uuid.uuid4().hex * 20)
    (tiny_disk / "filler").unlink()
    journal.finish(kept, "timed-out", reversal_reason="98")  # the journal works again
    assert [r.transaction_id for r in journal.queued_reversals()] == [kept]
    journal.close()


def test_a_sign_in_after_a_request_changed_its_keys_whatever_the_clock_says(tmp_path) -> None:
    """A clock sync stepped the clock back between the request and the sign-in: the sign-in's
    time is before the request's, yet it came after it (an approval of that request is MACed
    under keys the module no longer has)."""
    from agent.journal import Journal

    now = [1_000.0]
    journal = Journal(tmp_path / "j.sqlite3", clock=lambda: now[0])
    purchase = Message("0200", {3: "000000", 4: "000000001000", 11: "000042", 41: "10000001"})
    before = journal.begin(purchase, financial=True)
    journal.finish(before, "completed", Message("0210", {11: "000042", 39: "97"}))
    now[0] = 400.0  # stepped back by ten minutes
    journal.record_signin("003", {"MAK": "00000000"}, None)
    assert journal.sent_with_stan("000042").keys_changed
    purchase.fields[11] = "000043"
    journal.begin(purchase, financial=True)  # after the sign-in, under its keys
    assert not journal.sent_with_stan("000043").keys_changed
    journal.close()


def test_a_late_approval_reverses_only_the_latest_request_with_its_stan(tmp_path) -> None:
    from agent.journal import Journal

    journal = Journal(tmp_path / "j.sqlite3")
    purchase = Message("0200", {3: "000000", 4: "000000001000", 11: "000042", 41: "10000001"})
    declined = journal.begin(purchase, financial=True)
    journal.finish(declined, "completed", Message("0210", {11: "000042", 39: "51"}))
    refused = journal.begin(purchase, financial=True)
    journal.finish(refused, "completed", Message("0210", {11: "000042", 39: "97"}))
    approval = Message("0210", {11: "000042", 39: "00"})
    assert journal.sent_with_stan("000042").id == refused  # the latest with that STAN
    assert journal.reverse_late_approval(refused, approval) is not None
    [queued] = journal.queued_reversals()
    assert (queued.transaction_id, queued.reason) == (refused, "06")
    assert journal.reverse_late_approval(refused, approval) is None  # once
    approved = journal.begin(purchase, financial=True)
    journal.finish(approved, "completed", Message("0210", {11: "000042", 39: "00"}))
    assert journal.reverse_late_approval(approved, approval) is None  # the app got this one
    pending = journal.begin(purchase, financial=True)
    assert journal.reverse_late_approval(pending, approval) is None  # decided when it settles
    journal.close()


def test_journal_files_are_not_for_others_whatever_the_umask(tmp_path) -> None:
    """Outside systemd (no UMask=0077) the journal must not be readable by everyone."""
    import os

    old = os.umask(0o022)
    try:
        journal = Journal(tmp_path / "journal.sqlite3")
        journal.begin(purchase(1), financial=True)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.glob("journal.sqlite3*")}
    journal.close()
    # the service's group reads nothing; the technicians' group, given by an ACL in the state
    # directory (packaging/systemd/pos-agent.tmpfiles), reads through the group bit
    assert modes["journal.sqlite3"] == 0o640
    assert modes.get("journal.sqlite3-wal", 0o640) == 0o640


def test_retention_deletes_only_settled_rows(tmp_path, monkeypatch) -> None:
    """Old rows of settled batches go; pending rows, queued reversals and the current batch
    stay, however old (DESIGN.md section 8)."""
    now = [1_000_000.0]
    journal = Journal(tmp_path / "journal.sqlite3", clock=lambda: now[0])
    settled = journal.begin(purchase(1), financial=True)
    journal.finish(settled, "completed", response_to(purchase(1), "00"))
    reversed_one = journal.begin(purchase(2), financial=True)
    journal.finish(reversed_one, "timed-out", reversal_reason="98")  # its reversal stays queued
    journal.begin(purchase(3), financial=True)  # pending: in flight
    journal.record_signin("003", {}, None, batch=2)  # batch 1 is settled now
    current = journal.begin(purchase(4), financial=True)
    journal.finish(current, "completed", response_to(purchase(4), "00"))
    now[0] += 40 * 86_400
    assert journal.prune(keep_days=30, max_bytes=64 * 2**20) == 1
    kept = {row["stan"] for row in journal.transactions()}
    assert kept == {"000002", "000003", "000004"}
    assert len(journal.queued_reversals()) == 1
    # over the size cap, what may not go still stays; the events go, oldest first, down to
    # the newest EVENTS_KEPT
    monkeypatch.setattr("agent.journal.EVENTS_KEPT", 500)
    for n in range(2_000):
        journal.event("pin-entry", outcome=f"refused {n}", padding="x" * 200)
    size = journal.size_bytes
    assert journal.prune(keep_days=30, max_bytes=size // 2) == 0
    assert {row["stan"] for row in journal.transactions()} == kept
    assert journal.last_signin() is not None  # the latest sign-in is never pruned
    assert journal.size_bytes <= size // 2
    left = [e["outcome"] for e in journal.events() if e["kind"] == "pin-entry"]
    assert 0 < len(left) < 2_000 and left[-1] == "refused 1999"  # the newest kept
    assert journal.prune(keep_days=30, max_bytes=1) == 0  # however small the cap
    assert len(journal.events()) == 500
    journal.close()


def test_a_late_approval_after_a_nothing_to_reverse_is_reversed_again(tmp_path) -> None:
    """The timed-out request's reversal reached the host first and got 25; then the original
    arrived and was approved: its late approval proves there is something to reverse."""
    journal = Journal(tmp_path / "j.sqlite3")
    purchase = Message("0200", {3: "000000", 4: "000000001000", 11: "000043", 41: "10000001"})
    sent = journal.begin(purchase, financial=True)
    journal.finish(sent, "timed-out", detail="no response", reversal_reason="98")
    [first] = journal.queued_reversals()
    journal.reversal_closed(
        first.id, Message("0410", {11: "000043", 39: "25"}), "nothing-to-reverse"
    )
    assert journal.queued_reversals() == []
    assert journal.reverse_late_approval(sent, Message("0210", {11: "000043", 39: "00"}))
    [again] = journal.queued_reversals()
    assert (again.transaction_id, again.reason) == (sent, "06")
    journal.close()


def test_a_reversal_closed_as_nothing_keeps_its_transaction_until_rechecked(tmp_path) -> None:
    now = [1_000_000.0]
    uptime = [500.0]
    journal = Journal(
        tmp_path / "journal.sqlite3", clock=lambda: now[0], monotonic=lambda: uptime[0]
    )
    sent = journal.begin(purchase(5), financial=True)
    journal.finish(sent, "timed-out", reversal_reason="98")
    [reversal] = journal.queued_reversals()
    journal.reversal_closed(reversal.id, Message("0410", {39: "25"}), "nothing-to-reverse", 30.0)
    assert not journal.has_queued_reversals  # sales do not wait for the recheck
    assert journal.recheck_in() == 30.0
    now[0] += 3_600  # the wall clock steps forward an hour: the recheck is not due for it
    assert journal.reversals_to_recheck() == []
    journal.record_signin("003", {}, None, batch=2)  # its batch is settled
    now[0] += 40 * 86_400
    uptime[0] += 30.0
    assert [r.id for r in journal.reversals_to_recheck()] == [reversal.id]
    assert journal.prune(keep_days=30, max_bytes=1) == 0  # its original is still needed
    journal.reversal_closed(reversal.id, Message("0410", {39: "25"}), "nothing-to-reverse")
    assert journal.recheck_in() is None and journal.rechecks_waiting() == 0
    assert journal.prune(keep_days=30, max_bytes=64 * 2**20) == 1
    journal.close()


def test_a_late_approval_replaces_the_recheck_with_a_queued_reversal(tmp_path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    sent = journal.begin(purchase(43), financial=True)
    journal.finish(sent, "timed-out", reversal_reason="98")
    [first] = journal.queued_reversals()
    journal.reversal_closed(first.id, Message("0410", {39: "25"}), "nothing-to-reverse", 30.0)
    late = Message("0210", {11: purchase(43).text(11), 39: "00"})
    assert journal.reverse_late_approval(sent, late) is not None
    assert journal.rechecks_waiting() == 0  # the queued reversal does the recheck's work
    assert len(journal.queued_reversals()) == 1
    journal.close()


def test_numbering_a_request_finds_its_stan_by_index(tmp_path) -> None:
    """Every sale asks whether its next STAN is still open: by the index, not by reading the
    whole table (which made a sale's journal step grow with the journal)."""
    journal = Journal(tmp_path / "journal.sqlite3")
    plan = journal._db.execute(f"EXPLAIN QUERY PLAN {STAN_OPEN}", ("000001",)).fetchall()
    journal.close()
    assert any("USING INDEX transactions_stan" in row[-1] for row in plan), plan


def _events_on_disk(path: Path) -> list[str]:
    """The events' kinds as another process would read them (no waiting for the journal)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [kind for (kind,) in db.execute("SELECT kind FROM events ORDER BY id")]


def test_a_noted_event_goes_in_with_the_next_commit(tmp_path, monkeypatch) -> None:
    """A PIN entry's line and the purchase after it: one commit, one disk sync (issue 26)."""
    monkeypatch.setattr("agent.journal.NOTE_DELAY", 60.0)  # only a commit can take it
    journal = Journal(tmp_path / "journal.sqlite3")
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    journal.note("pin-entry", pan="********0123", outcome="served")
    transaction = journal.begin(purchase(), financial=True)
    assert _events_on_disk(journal.path) == ["pin-entry"]
    assert statements.count("COMMIT") == 1
    journal.finish(transaction, "completed")
    journal.close()  # it does not wait for the delay either
    assert _events_on_disk(journal.path) == ["pin-entry"]


def test_a_noted_event_no_commit_takes_is_written_alone(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("agent.journal.NOTE_DELAY", 0.05)
    journal = Journal(tmp_path / "journal.sqlite3")
    journal.note("command", id="c1", cmd="selftest", outcome="done")
    journal._thread.submit(int).result(timeout=10)  # the writer's turn on the journal's thread
    assert _events_on_disk(journal.path) == ["command"]
    journal.close()


def test_the_journals_thread_does_not_wait_for_a_noted_event(tmp_path, monkeypatch) -> None:
    """A step asked of the journal's thread (a status, a reversal) goes at once; a reader sees
    what was noted before it looked."""
    monkeypatch.setattr("agent.journal.NOTE_DELAY", 3600.0)
    journal = Journal(tmp_path / "journal.sqlite3")
    journal.note("light-check", check="clock")
    done = []
    journal.later(done.append, "step")
    journal._thread.submit(int).result(timeout=10)  # not an hour
    assert done == ["step"] and _events_on_disk(journal.path) == ["light-check"]
    journal.note("replayed", app_stan="000001")
    assert [e["kind"] for e in journal.events()] == ["light-check", "replayed"]
    journal.close()


def test_a_noted_event_outlives_a_commit_that_failed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("agent.journal.NOTE_DELAY", 3600.0)
    journal = Journal(tmp_path / "journal.sqlite3")
    journal.note("pin-entry", outcome="served")
    with pytest.raises(RuntimeError), journal._write():
        raise RuntimeError("the step failed after its notes were taken")
    assert _events_on_disk(journal.path) == []
    journal.event("signed-in", scheme="des")
    assert _events_on_disk(journal.path) == ["pin-entry", "signed-in"]
    journal.close()


def test_noted_events_wait_bounded_for_a_full_disk(tiny_disk: Path, monkeypatch) -> None:
    monkeypatch.setattr("agent.journal.NOTE_DELAY", 3600.0)
    monkeypatch.setattr("agent.journal.NOTES_KEPT", 3)
    journal = Journal(tiny_disk / "journal.sqlite3")
    fill_disk(tiny_disk)
    for n in range(5):
        journal.note("pin-entry", n=n)
    with pytest.raises(JournalError, match="disk is full"):
        for _ in range(1000):  # until SQLite's cache must go to the disk
            journal.event("filler", text=uuid.uuid4().hex * 50)
    (tiny_disk / "filler").unlink()
    journal.close()  # writes what it kept
    with contextlib.closing(Journal(tiny_disk / "journal.sqlite3")) as reopened:
        kept = [e["n"] for e in reopened.events() if "n" in e]
    assert kept == [2, 3, 4]  # the newest, once the disk took writes again


def test_a_note_that_is_not_json_costs_no_commit_its_place(tmp_path, monkeypatch) -> None:
    """It is refused when noted (logged), not found out by the sale it would go in with."""
    monkeypatch.setattr("agent.journal.NOTE_DELAY", 3600.0)
    journal = Journal(tmp_path / "journal.sqlite3")
    journal.note("pin-entry", peer=object())
    journal.note("pin-entry", outcome="served")
    transaction = journal.begin(purchase(), financial=True)
    journal.finish(transaction, "completed")
    assert _events_on_disk(journal.path) == ["pin-entry"]
    journal.close()


def test_a_journal_that_cannot_begin_on_a_full_disk_leaves_no_empty_file(tiny_disk) -> None:
    """An empty journal file is taken for a truncated one (damaged): the open that created it
    and could not write its first page removes it, so the start after the disk has room is a
    plain first start, not a damaged journal set aside."""
    fill_disk(tiny_disk)
    path = tiny_disk / "journal.sqlite3"
    with pytest.raises(JournalError):
        Journal(path)
    assert not path.exists()
    (tiny_disk / "filler").unlink()
    journal = Journal.open_for_service(path)
    assert [e["kind"] for e in journal.events()] == []  # no journal-damaged
    journal.close()


def test_an_emptied_journal_is_damaged(tmp_path) -> None:
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"")
    with pytest.raises(JournalDamaged, match="it is empty"):
        Journal(path)


@pytest.mark.parametrize("as_text", [False, True])
def test_a_replayed_answer_keeps_the_voucher_of_field_59_and_never_the_tusn(
    tmp_path, as_text: bool
) -> None:
    """A host that echoes field 59: the TUSN usage (A2) carries the random factor, the PAN's
    last 6 digits, and is never kept for a replay (nor A1, A3); the QR voucher (A4) is. Also
    where an acquirer's profile makes 59 text."""
    a2 = b"A2031" + b"01" + b"SN0000000001" + b"890123" + b"ABCDEFGHIJK"
    field = a2 + b"A4005VOUCH"
    journal = Journal(tmp_path / "journal.sqlite3")
    purchase = Message("0200", {3: "000000", 4: "000000001000", 11: journal.take_stan()})
    transaction = journal.begin(purchase, financial=True, app_stan="000901", replay_key="k")
    answer = Message("0210", {11: "000901", 39: "00", 59: field.decode() if as_text else field})
    journal.finish(transaction, "completed", answer, answer=answer)
    _, again = journal.replay("000901", "k", 120)
    assert again.get(59) == ("A4005VOUCH" if as_text else b"A4005VOUCH")
    with contextlib.closing(sqlite3.connect(tmp_path / "journal.sqlite3")) as db:
        [(kept,)] = db.execute("SELECT answer FROM transactions").fetchall()
    assert "890123" not in kept and b"890123".hex() not in kept
    journal.close()
