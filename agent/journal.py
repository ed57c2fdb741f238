"""The journal: SQLite in the state directory (DESIGN.md section 8).

It keeps the STAN counter and batch, the last sign-in, one masked row per request/response, events,
and the reversal queue. A financial request is written as pending before its first byte leaves; a
pending request found at start-up becomes a reversal.

Nothing here holds a full PAN, track, PIN block or key: rows keep masked summaries, and a reversal
keeps only the fields that identify the original (TID, MID, STAN, batch, amount, codes), which is
how the host finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent import damaged, stages
from agent.blocking import patiently
from agent.wire import codes, field59, mask
from agent.wire.errors import DecodeError
from agent.wire.mask import masked_fields
from agent.wire.message import Message

log = logging.getLogger(__name__)

# Fields of a financial request kept to build its reversal: none of them is cardholder data.
# A void's or completion's reversal names its original as the request did (61, 38): a host
# that matches such reversals by them would otherwise answer 25 and leave the void in effect.
REVERSAL_FIELDS = (3, 4, 11, 22, 25, 38, 41, 42, 49, 60, 61)
# The rows a repetition may be of (parameters: Journal._tries_of), for replay and unanswered_try
_TRIES_OF = "app_stan = ? AND replay_key = ? AND batch = ? AND boot = ? AND uptime >= ?"
MAX_STAN = 999_999
WAL_PAGES = 100
WAL_LIMIT = 512 * 1024
PRUNE_CHUNK = 200  # rows deleted per step while the journal is over its size cap
# Events kept whatever the size cap (about 2 MB): when what may not go (the current batch,
# pending rows, the outbox) is over the cap by itself, the audit trail is not wiped for it.
EVENTS_KEPT = 10_000
# seconds what must answer anyway (the status, telemetry) waits for the journal: a frozen or
# failing disk holds it up for as long as it lasts
PATIENCE = 1.0
# seconds a sale waits for the journal before it is answered 96 (never sent unrecorded)
SALE_PATIENCE = 10.0
# seconds a noted event (an audit line: a PIN entry, an operator's command) waits for a commit to
# go in with, most often the sale that follows it (a PIN entry's purchase), before the journal's
# own thread writes it alone: one disk sync per sale instead of two, and a sale that does not
# wait for the sync of the line before it (issue 26)
NOTE_DELAY = 0.2
NOTES_KEPT = 1000  # noted events waiting at most while the journal cannot write; then the oldest go
T = TypeVar("T")
# Transactions retention may delete: of a batch other than the current one (settled), finished,
# with no reversal still queued or waiting for its recheck.
_SETTLED = (
    "(batch IS NULL OR batch != ?) AND state != 'pending' AND NOT EXISTS "
    "(SELECT 1 FROM reversals r WHERE r.transaction_id = transactions.id "
    "AND (r.state = 'queued' OR r.recheck_at IS NOT NULL))"
)

MIGRATIONS = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE transactions (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        mti TEXT NOT NULL,
        stan TEXT NOT NULL,
        state TEXT NOT NULL,
        request TEXT NOT NULL,
        response TEXT,
        response_code TEXT,
        detail TEXT,
        reversal_template TEXT
    );
    CREATE INDEX transactions_state ON transactions (state);
    CREATE TABLE reversals (
        id INTEGER PRIMARY KEY,
        transaction_id INTEGER NOT NULL REFERENCES transactions (id),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        reason TEXT NOT NULL,
        fields TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX reversals_state ON reversals (state);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE TABLE signins (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        scheme TEXT NOT NULL,
        kcvs TEXT NOT NULL,
        host_time TEXT
    );
    """,
    # 2: what a sign-in was made as, so the self-check can tell a changed TID/MID from a stale one
    """
    ALTER TABLE signins ADD COLUMN tid TEXT;
    ALTER TABLE signins ADD COLUMN mid TEXT;
    """,
    # 3: the STAN map (the app's STAN of each request, per batch) and what the app was answered,
    # for references to earlier requests and for replaying a request the app repeats
    """
    ALTER TABLE transactions ADD COLUMN app_stan TEXT;
    ALTER TABLE transactions ADD COLUMN batch TEXT;
    ALTER TABLE transactions ADD COLUMN replay_key TEXT;
    ALTER TABLE transactions ADD COLUMN answer TEXT;
    CREATE INDEX transactions_app_stan ON transactions (app_stan, batch);
    """,
    # 4: when a reversal the host closed as "nothing to reverse" is sent once more, in case the
    # original reached the host after it (NULL: no recheck due)
    """
    ALTER TABLE reversals ADD COLUMN recheck_at REAL;
    """,
    # 5: the telemetry outbox (DESIGN.md section 14): events for the fleet, written in the same
    # commit as the journal event they come from, deleted once the broker has them
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """,
    # 6: when a request was made on the monotonic clock of this boot (DESIGN.md section 8: a
    # step of the wall clock neither opens nor closes the replay window)
    """
    ALTER TABLE transactions ADD COLUMN boot TEXT;
    ALTER TABLE transactions ADD COLUMN uptime REAL;
    ALTER TABLE reversals ADD COLUMN recheck_boot TEXT;
    """,
    # 7: telemetry event ids never start again once the outbox empties (a subscriber drops
    # repeats by id, DESIGN.md section 14): AUTOINCREMENT never reuses one, and the sequence
    # starts past every id a subscriber may have seen (none above the journal's events)
    """
    CREATE TABLE outbox_ids (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    INSERT INTO outbox_ids (id, at, kind, detail) SELECT id, at, kind, detail FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_ids RENAME TO outbox;
    DELETE FROM sqlite_sequence WHERE name = 'outbox';
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'outbox', max(coalesce((SELECT max(id) FROM events), 0),
                             coalesce((SELECT max(id) FROM outbox), 0));
    """,
    # 8: a STAN is found by its number (is it still open, before it is given again; the
    # request an unmatched answer names): without an index every sale scanned the whole table,
    # its time growing with the journal (0.3 ms at 2,000 rows, 1.1 ms at 6,000, here)
    """
    CREATE INDEX transactions_stan ON transactions (stan);
    """,
)
# Whether a STAN is held by an open transaction (pending, or its reversal queued): asked for
# every request the agent numbers (migration 8's index keeps it from reading the whole table)
STAN_OPEN = (
    "SELECT 1 FROM transactions t WHERE t.stan = ? AND (t.state = 'pending' OR "
    "EXISTS (SELECT 1 FROM reversals r WHERE r.transaction_id = t.id AND r.state = 'queued'))"
)
# Fields of a host's answer that are not kept for a replay: they are card data, or are the
# request's own (the replay takes them from the repeated request). Field 55 is kept where it
# holds no card data (the issuer's 91 and scripts, which the app's EMV kernel needs again).
NOT_REPLAYED = (2, 14, 35, 36, 52, 55, 62)


# What the fleet hears of a journal event: (telemetry kind, detail) or None (DESIGN.md section 14).
Forward = Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]] | None]


class JournalError(Exception):
    """The journal cannot be written or read; the text says why (full disk, corrupt file...)."""


class JournalDamaged(JournalError):
    """The journal file is not a database, is truncated or has malformed pages."""


# SQLite's result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB
_DAMAGE = (11, 26)


def uptime() -> float:
    """Seconds since boot, suspend included: steps of the wall clock do not move it."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _emptied(path: Path) -> bool:
    """Whether the journal file is there and empty: truncated, as a new one is never left (its
    first step writes the header)."""
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def unseen_changes(path: Path) -> Path | None:
    """The -wal file beside the journal ``path`` when it holds changes, which a read-only look
    (``immutable``: it creates nothing) does not see: a service that stopped without closing
    the journal left them there (it takes them in at its next start)."""
    wal = path.with_name(path.name + "-wal")
    try:
        return wal if wal.stat().st_size > 0 else None
    except OSError:
        return None


def _forget_new(path: Path, created: bool) -> None:
    """A journal file this open created and could not begin (a full disk): removed, not left
    empty for the next start to take for a truncated one."""
    if created and _emptied(path):
        with contextlib.suppress(OSError):
            path.unlink()


def boot_id() -> str:
    """This boot's id: uptimes of different boots cannot be compared."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: the process start stands in for the boot
        return f"pid-{os.getpid()}-{time.time():.0f}"


@dataclass(frozen=True)
class Sent:
    """The latest reversible request sent with a wire STAN, as an unmatched answer finds it."""

    id: int
    mti: str
    state: str
    keys_changed: bool  # a sign-in (new working keys) came after it was sent
    terminal: tuple[str, str]  # the TID and MID it went with (a re-provisioning may change them)


@dataclass(frozen=True)
class Reversal:
    id: int
    transaction_id: int
    reason: str
    message: Message
    attempts: int


def _summary(message: Message) -> str:
    return json.dumps({"mti": message.mti, "fields": masked_fields(message)}, ensure_ascii=False)


@dataclass(frozen=True)
class Rendered:
    """A host's response as the journal keeps it (masked), its code, and the app's answer kept
    for a replay: made ahead of the durable step, on any thread (while the module checks the
    response's MAC)."""

    code: str | None
    response: str
    answer: str | None

    @classmethod
    def of(cls, response: Message, answer: Message | None = None) -> Rendered:
        code = response.text(39) if 39 in response else None
        kept = _replayable(answer) if answer is not None else None
        return cls(code, _summary(response), kept)

    def without_answer(self) -> Rendered:
        return Rendered(self.code, self.response, None)


def _replayable(answer: Message) -> str:
    """An answer without card data, as JSON; text values start with ``=``, binary (hex) ``#``."""
    kept = {n: v for n, v in answer.fields.items() if n not in NOT_REPLAYED}
    issuer = answer.fields.get(55)
    if isinstance(issuer, bytes) and mask.icc_free_of_card_data(issuer):
        kept[55] = issuer
    raw = kept.pop(59, None)
    if raw is not None:  # a QR voucher (A4) is replayed; PIN data (A1), the TUSN (A2) never
        try:
            replayed = field59.for_replay(field59.field_bytes(raw))
        except DecodeError:  # text that is not ASCII: not usages, nothing of it kept
            replayed = None
        if replayed is not None:  # as text where an acquirer's profile makes it text
            kept[59] = replayed.decode("ascii") if isinstance(raw, str) else replayed
    fields = {str(n): f"#{v.hex()}" if isinstance(v, bytes) else f"={v}" for n, v in kept.items()}
    return json.dumps({"mti": answer.mti, "fields": fields}, ensure_ascii=False)


@dataclass(frozen=True)
class Note:
    """An event noted for the record (:meth:`Journal.note`), its detail rendered already."""

    at: float
    kind: str
    detail: dict[str, Any]
    text: str


def _detail_text(detail: dict[str, Any]) -> str:
    return json.dumps(detail, ensure_ascii=False, sort_keys=True)


def _unrecorded(future: Future[object]) -> None:
    if (exc := future.exception()) is not None:
        log.error("journal: a step not waited for failed: %s", exc)


class Journal:
    """One connection, used from threads and never from an event loop: a commit on a frozen or
    dying disk lasts as long as the freeze, and while it lasts the sockets must keep answering.
    Coroutines run its steps with :meth:`run` on the journal's own thread; the gateway journals
    and MACs in one worker hop. A lock keeps each step whole."""

    def __init__(
        self,
        path: Path,
        clock: Any = time.time,
        *,
        monotonic: Callable[[], float] = uptime,
        read_only: bool = False,
        forward: Forward | None = None,
        outbox_max: int = 10_000,
        outbox_ids_above: int = 0,
    ) -> None:
        """``read_only``: a technician's look while no service runs (DESIGN.md section 6). It
        creates nothing: no directory, no file, not even SQLite's -wal and -shm (which, made by
        root, would lock the service out), so it reads the database as it is on disk
        (``immutable``) and changes not yet checkpointed from a -wal file are not seen.
        ``forward``: which events also go to the telemetry outbox, which keeps at most
        ``outbox_max`` of them (the oldest are dropped, and counted); its ids start above
        ``outbox_ids_above`` (the highest the fleet saw, from a journal before this one)."""
        self.path = path
        self._forward = forward
        self._outbox_max = outbox_max
        self.outbox_written = 0  # events put into the outbox since the journal was opened
        self.read_only = read_only
        self._clock = clock
        self._monotonic = monotonic
        self._replay_secret: bytes | None = None
        self._boot = boot_id()
        self._lock = threading.RLock()
        self._thread: ThreadPoolExecutor | None = None
        self._thread_id: int | None = None
        # noted events not written yet, and their writer on the journal's thread: asked for
        # (it waits NOTE_DELAY for a commit to take them), told to hurry
        self._notes: list[Note] = []
        self._notes_changed = threading.Condition()
        self._note_writer_asked = False
        self._note_writer_hurried = False
        if read_only:
            if not path.is_file():
                raise JournalError(f"journal {path} does not exist: the service has not run here")
            target, uri = f"file:{path.as_posix()}?mode=ro&immutable=1", True
            created = False
        else:
            if _emptied(path):
                # SQLite takes an empty file for a new database: its STANs, reversals and
                # batch would be gone without a word
                raise JournalDamaged(f"journal {path} is damaged: it is empty (truncated)")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                created = not path.exists()
                # 0640 at most, whatever the umask: the group bit is for the technicians' ACL of
                # the state directory (pos-agent.tmpfiles); SQLite gives -wal and -shm this mode.
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o640))
            except OSError as exc:
                raise JournalError(f"journal {path} cannot be created: {exc}") from None
            target, uri = str(path), False
        try:
            self._db = sqlite3.connect(
                target, uri=uri, isolation_level=None, check_same_thread=False
            )
        except sqlite3.DatabaseError as exc:
            _forget_new(path, created)
            raise JournalError(f"journal {path} cannot be opened: {exc}") from None
        try:
            if not read_only:
                # a damaged page must be found now, not by a sale (DESIGN.md section 8)
                verdict = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
                if verdict != "ok":
                    raise JournalDamaged(f"journal {path} is damaged: {verdict}")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("PRAGMA foreign_keys=ON")
                # A small state partition: the WAL is checkpointed every WAL_PAGES pages and
                # cut back to WAL_LIMIT bytes after it, instead of SQLite's 1,000 pages (4 MB).
                self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
                self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
                self._db.execute("PRAGMA temp_store=MEMORY")  # retention's scratch table
            self._migrate()
            if outbox_ids_above and not read_only:
                self._outbox_ids_above(outbox_ids_above)
            batch = self._db.execute("SELECT value FROM meta WHERE key = 'batch'").fetchone()
            self._batch = int(batch[0]) if batch else 1
            stan = self._db.execute("SELECT value FROM meta WHERE key = 'stan'").fetchone()
            self._stan = int(stan[0]) if stan else 0  # the last taken (see take_stan)
            self._queued = self._db.execute(
                "SELECT count(*) FROM reversals WHERE state = 'queued'"
            ).fetchone()[0]
            self.created = created  # a journal begun by this open
        except (sqlite3.DatabaseError, JournalError) as exc:
            self._db.close()
            _forget_new(path, created)
            if isinstance(exc, JournalError):
                raise
            if getattr(exc, "sqlite_errorcode", None) in _DAMAGE:
                raise JournalDamaged(f"journal {path} is damaged: {exc}") from None
            raise JournalError(f"journal {path} cannot be opened: {exc}") from None

    @classmethod
    def open_for_service(cls, path: Path, **options: Any) -> Journal:
        """The service's journal: a damaged one is moved aside whole (never deleted: it may
        hold reversals a person must settle) and a fresh one started, which records that."""
        try:
            journal = cls(path, **options)
        except JournalDamaged as exc:
            try:
                aside = damaged.set_aside(path, ("-wal", "-shm"))
            except OSError as move:
                raise JournalError(f"{exc}; it cannot be moved aside: {move}") from None
            log.critical("%s; moved aside to %s, a fresh journal starts", exc, aside)
            journal = cls(path, **options)  # a full disk: raised, and the next try lands below
            journal._begun_after(aside, str(exc))
            return journal
        earlier = damaged.copies(path) if journal.created else []
        if earlier:  # set aside by an earlier try, whose fresh journal could not begin then
            journal._begun_after(earlier[-1], "set aside before this journal could begin")
        return journal

    def _begun_after(self, aside: Path, reason: str) -> None:
        """A fresh journal in place of the damaged one set aside as ``aside``. The host still
        knows that batch's STANs: numbering again from 1 would meet them (94, duplicate), so
        it starts at a random point of the range; the event says what happened. If the disk
        refuses that, the fresh journal is removed (it holds nothing): the next try begins it
        again, and tells it."""
        self._stan = int.from_bytes(os.urandom(4), "big") % MAX_STAN
        try:
            with self._write() as db:
                self._save_stan(db)
                self._event(db, "journal-damaged", moved_to=str(aside), reason=reason)
        except JournalError:
            self.close()
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    self.path.with_name(self.path.name + suffix).unlink()
            raise

    @property
    def unseen_changes(self) -> bool:
        """Read-only: a -wal file holds changes this look does not see."""
        return self.read_only and unseen_changes(self.path) is not None

    def run(self, step: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """``step(*args, **kwargs)`` (a step of this journal, or a closure over several) on the
        journal's own thread, as a future of the running loop. Steps run in the order given; a
        step once asked is taken even if its caller is cancelled meanwhile."""
        return asyncio.shield(self._submit(step, *args, **kwargs))

    def _submit(self, step: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """``step`` queued on the journal's thread, as a future of the running loop."""
        self._hurry_note_writer()
        return asyncio.get_running_loop().run_in_executor(
            self._worker(), functools.partial(step, *args, **kwargs)
        )

    async def within(
        self, seconds: float, step: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> T:
        """:meth:`run`, or a :class:`JournalError` if the step has not ended within ``seconds``
        (it is still taken later): for what must answer while the disk is frozen or failing."""
        try:
            return await patiently(self._submit(step, *args, **kwargs), seconds)
        except TimeoutError:
            raise JournalError(
                f"journal {self.path} did not answer within {seconds:g} s (its disk may be "
                "frozen or failing)"
            ) from None

    def later(self, step: Callable[..., object], /, *args: Any, **kwargs: Any) -> None:
        """``step`` on the journal's thread, in order with the rest, without waiting for it; a
        failure is logged."""
        self._hurry_note_writer()
        self._worker().submit(step, *args, **kwargs).add_done_callback(_unrecorded)

    def note(self, kind: str, **detail: Any) -> None:
        """An event for the record, without waiting for it: an answer is never held up by its
        audit line. It goes in with the next commit, whichever thread makes it (most often the
        sale the line comes before: a PIN entry's purchase), or, when none comes within
        :data:`NOTE_DELAY`, in a commit of its own on the journal's thread. Its time is when it
        was noted, not when it was written."""
        try:  # rendered now: a detail that is not JSON must not fail the commit it goes in
            note = Note(self._clock(), kind, detail, _detail_text(detail))
        except (TypeError, ValueError) as exc:
            log.error("journal %s: event %s not noted: %s", self.path, kind, exc)
            return
        with self._notes_changed:
            self._notes.append(note)
            self._keep_notes_bounded()
            ask, self._note_writer_asked = not self._note_writer_asked, True
        if ask:
            self._worker().submit(self._write_notes_soon).add_done_callback(_unrecorded)

    def _keep_notes_bounded(self) -> None:
        """With the lock of the notes: a journal that cannot write keeps the newest."""
        if len(self._notes) > NOTES_KEPT:
            dropped = len(self._notes) - NOTES_KEPT
            del self._notes[:dropped]
            log.error("journal %s: %d noted events dropped: it could not write them", self.path,
                      dropped)  # fmt: skip

    def _write_notes_soon(self) -> None:
        """On the journal's thread: the noted events no commit took within NOTE_DELAY, or as
        soon as another step is asked of this thread (it must not wait for them)."""
        with self._notes_changed:
            self._notes_changed.wait_for(
                lambda: not self._notes or self._note_writer_hurried, NOTE_DELAY
            )
            self._note_writer_asked = self._note_writer_hurried = False
        self._write_notes()

    def _hurry_note_writer(self) -> None:
        if self._note_writer_asked:
            with self._notes_changed:
                self._note_writer_hurried = True
                self._notes_changed.notify_all()

    def _write_notes(self) -> None:
        """The noted events waiting, in a commit of their own (:meth:`_write` takes them)."""
        if self._notes and not self.read_only:
            with self._write():
                pass

    def _take_notes(self) -> list[Note]:
        if not self._notes:  # the sales' path: one look at an empty list
            return []
        with self._notes_changed:
            notes, self._notes = self._notes, []
            self._notes_changed.notify_all()  # a writer waiting for them has nothing to do
        return notes

    def _keep_notes(self, notes: list[Note]) -> None:
        """Notes a commit took and could not write: first in line again (the next commit, or
        the writer the next note asks for, writes them)."""
        if notes:
            with self._notes_changed:
                self._notes[:0] = notes
                self._keep_notes_bounded()

    def _worker(self) -> ThreadPoolExecutor:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(
                1, thread_name_prefix="journal", initializer=self._on_own_thread
            )
        return self._thread

    def _on_own_thread(self) -> None:
        self._thread_id = threading.get_ident()

    def _caught_up(self) -> None:
        """Write what was noted and wait for the steps asked before now (:meth:`later`): a
        reader of the record sees what was noted before it looked."""
        try:
            self._write_notes()
        except JournalError as exc:  # the reader still reads what is there
            log.warning("journal %s: noted events not written yet: %s", self.path, exc)
        if self._thread is not None and threading.get_ident() != self._thread_id:
            self._hurry_note_writer()
            self._thread.submit(int).result()

    def close(self) -> None:
        if self._thread is not None:
            self._hurry_note_writer()
            self._thread.shutdown(wait=True)
        try:
            self._write_notes()
        except JournalError as exc:
            log.error("journal %s: noted events not written: %s", self.path, exc)
        with self._lock:
            self._db.close()

    # ----------------------------------------------------------------------------- retention

    @property
    def size_bytes(self) -> int:
        """What the journal's rows take (free pages, reused by new rows, not counted)."""
        pages = self._rows("PRAGMA page_count")[0][0] - self._rows("PRAGMA freelist_count")[0][0]
        return pages * self._rows("PRAGMA page_size")[0][0]

    def prune(self, keep_days: float, max_bytes: int) -> int:
        """Retention (DESIGN.md section 8): rows of settled batches older than ``keep_days``
        and events as old go; then, while the journal is over ``max_bytes``, the oldest settled
        rows and the events no newer than them, and when no settled row is left, the oldest
        events down to the newest :data:`EVENTS_KEPT` (a flood of them must not fill the state
        partition, nor may what cannot go wipe the audit trail). Pending rows, queued
        reversals, the current batch and the telemetry outbox stay. It works in small steps,
        each its own transaction, so a sale waits for one step at most. Then the WAL is
        checkpointed. Returns how many transactions went."""
        cutoff = self._clock() - keep_days * 86_400
        batch = self._batch_text()
        deleted = 0
        try:
            while removed := self._delete(f"{_SETTLED} AND updated_at < ?", (batch, cutoff))[0]:
                deleted += removed
            while self._write_step(
                "DELETE FROM events WHERE id IN "
                "(SELECT id FROM events WHERE at < ? ORDER BY id LIMIT ?)",
                (cutoff, PRUNE_CHUNK),
            ):
                pass
            self._write_step(
                "DELETE FROM signins WHERE at < ? AND id != (SELECT max(id) FROM signins)",
                (cutoff,),
            )
            while self.size_bytes > max_bytes:
                removed, newest = self._delete(_SETTLED, (batch,))
                if not removed:
                    break  # what is left may not go: the current batch and what is pending
                deleted += removed
                # the events of that time go with them, never those of what is kept
                self._write_step("DELETE FROM events WHERE at <= ?", (newest,))
            events = 0
            while self.size_bytes > max_bytes and (
                step := self._write_step(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT "
                    "min(?, max((SELECT count(*) FROM events) - ?, 0)))",
                    (PRUNE_CHUNK, EVENTS_KEPT),
                )
            ):
                events += step
            if events:
                log.warning("journal over %d bytes with nothing settled left to prune: its %d "
                            "oldest events removed", max_bytes, events)  # fmt: skip
        finally:
            self.checkpoint()
        return deleted

    def _write_step(self, statement: str, parameters: tuple[Any, ...]) -> int:
        with self._write() as db:
            return db.execute(statement, parameters).rowcount

    def _delete(self, where: str, parameters: tuple[Any, ...]) -> tuple[int, float]:
        """Up to ``PRUNE_CHUNK`` of the oldest transactions ``where`` says, with their closed
        reversals: how many, and the newest of their times."""
        with self._write() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY)")
            db.execute("DELETE FROM doomed")
            db.execute(
                f"INSERT INTO doomed SELECT id FROM transactions WHERE {where} "
                f"ORDER BY id LIMIT {PRUNE_CHUNK}",
                parameters,
            )
            newest = db.execute(
                "SELECT max(updated_at) FROM transactions WHERE id IN (SELECT id FROM doomed)"
            ).fetchone()[0]
            db.execute("DELETE FROM reversals WHERE transaction_id IN (SELECT id FROM doomed)")
            count = db.execute(
                "DELETE FROM transactions WHERE id IN (SELECT id FROM doomed)"
            ).rowcount
        return count, newest or 0.0

    def checkpoint(self) -> None:
        """Write the WAL into the database and truncate it (when no reader holds it back)."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise JournalError(f"journal {self.path} checkpoint failed: {exc}") from None

    # ------------------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One durable transaction; any SQLite failure becomes a JournalError with its reason."""
        if self.read_only:
            raise JournalError(f"journal {self.path} is open read-only (a technician's look)")
        with self._lock:
            notes: list[Note] = []
            try:
                self._db.execute("BEGIN IMMEDIATE")
                notes = self._take_notes()  # what was noted goes in with this commit
                try:
                    for note in notes:
                        self._insert_event(self._db, note)
                    yield self._db
                except BaseException:
                    kept, notes = notes, []
                    self._keep_notes(kept)
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._keep_notes(notes)
                raise JournalError(f"journal {self.path} write failed: {exc}") from None

    def _rows(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"journal {self.path} read failed: {exc}") from None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise JournalError(
                f"journal {self.path} has schema {version}, newer than this agent knows "
                f"({len(MIGRATIONS)})"
            )
        if self.read_only and version < len(MIGRATIONS):
            raise JournalError(
                f"journal {self.path} has schema {version}: the service brings it to "
                f"{len(MIGRATIONS)} at its next start"
            )
        if version == len(MIGRATIONS):
            return
        # every step at once: one disk sync (a new journal's schema is eight steps), and a
        # failure leaves the journal as it was
        with self._write() as db:
            for script in MIGRATIONS[version:]:
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    @property
    def schema_version(self) -> int:
        return self._rows("PRAGMA user_version")[0][0]

    def _meta(self, key: str, default: str) -> str:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    @staticmethod
    def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -------------------------------------------------------------------------- counters

    def next_stan(self) -> int:
        """The next STAN (1-999999, wrapping), skipping any still open in this journal."""
        with self._write() as db:
            return self._allocate_stan(db)

    def take_stan(self) -> str:
        """The next STAN, as :meth:`next_stan`, without a disk sync of its own: the :meth:`begin`
        that records the request carrying it makes it durable, in the same step as its row. So
        a request can be encoded and MACed before the journal records it (its MAC covers field
        11). A STAN taken and never recorded is not used again by this run and may be after a
        restart: nothing was sent with it."""
        with self._lock:
            try:
                return f"{self._take_stan(self._db):06d}"
            except sqlite3.Error as exc:
                raise JournalError(f"journal {self.path} read failed: {exc}") from None

    def _take_stan(self, db: sqlite3.Connection) -> int:
        stan = self._stan
        for _ in range(MAX_STAN):
            stan = stan % MAX_STAN + 1
            if not self._stan_open(db, f"{stan:06d}"):
                break
        else:
            raise JournalError("every STAN is held by an open transaction")
        self._stan = stan
        return stan

    def _allocate_stan(self, db: sqlite3.Connection) -> int:
        stan = self._take_stan(db)
        self._save_stan(db)
        return stan

    def _save_stan(self, db: sqlite3.Connection) -> None:
        """The last STAN taken, in ``db``'s step: not necessarily its request's (another thread
        may have taken one since), never an earlier one."""
        self._set_meta(db, "stan", str(self._stan))

    @staticmethod
    def _stan_open(db: sqlite3.Connection, stan: str) -> bool:
        return db.execute(STAN_OPEN, (stan,)).fetchone() is not None

    @property
    def batch(self) -> int:
        """The current batch, kept in memory: numbering a request never reads the disk."""
        return self._batch

    def _batch_text(self) -> str:
        return f"{self.batch:06d}"

    # ---------------------------------------------------------------------- transactions

    def begin(
        self,
        message: Message,
        *,
        financial: bool,
        app_stan: str | None = None,
        replay_key: str | None = None,
        syncing: Callable[[], None] | None = None,
    ) -> int:
        """Record a request before it is sent; returns its id. Financial requests keep what a
        reversal needs. A STAN the request took with :meth:`take_stan` is made durable in the
        same step. ``app_stan`` (the app's own STAN of the request) enters the STAN map of the
        current batch; ``replay_key`` says what a repetition must match. ``syncing`` is called
        once the row is written, as its commit begins: what it starts on another thread runs
        while the disk syncs."""
        with self._write() as db:
            self._save_stan(db)
            transaction = self._pending(db, message, financial, app_stan, replay_key)
            stages.mark("pending-row")  # what is left is the commit: the disk's sync
            if syncing is not None:
                syncing()
            return transaction

    def begin_numbered(self, build: Callable[[int, int], Message]) -> tuple[Message, int]:
        """A request of the agent's own (a sign-in, a download step), built by ``build(stan,
        batch)`` from the next STAN and the current batch and recorded as pending, in one durable
        step. Returns it and its id."""
        with self._write() as db:
            message = build(self._allocate_stan(db), self.batch)
            return message, self._pending(db, message, False, None, None)

    def _pending(
        self,
        db: sqlite3.Connection,
        message: Message,
        financial: bool,
        app_stan: str | None,
        replay_key: str | None,
    ) -> int:
        now = self._clock()
        template = None
        if financial:
            template = json.dumps(
                {str(n): message.fields[n] for n in REVERSAL_FIELDS if n in message.fields}
            )
        cursor = db.execute(
            "INSERT INTO transactions (created_at, updated_at, mti, stan, state, request, "
            "reversal_template, app_stan, batch, replay_key, boot, uptime) "
            "VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
            (
                now, now, message.mti, message.text(11), _summary(message), template,
                app_stan, self._batch_text(), replay_key, self._boot, self._monotonic(),
            ),
        )  # fmt: skip
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish(
        self,
        transaction_id: int,
        state: str,
        response: Message | Rendered | None = None,
        detail: str = "",
        reversal_reason: str | None = None,
        answer: Message | None = None,
        voids: tuple[str, str] | None = None,
    ) -> int | None:
        """Close a pending transaction; with ``reversal_reason`` queue its reversal in the same
        durable step. ``answer`` is what the app gets, kept (without card data) for a replay;
        a ``response`` rendered ahead carries its own. ``voids`` (wire STAN, batch): the
        request an approved void voided, no longer replayable from the same step (a void
        replayable while its original still is would be undone by nothing). Returns the
        reversal id, if one was queued."""
        if isinstance(response, Message):
            response = Rendered.of(response, answer)
        elif answer is not None:
            raise TypeError("a rendered response carries its answer")
        with self._write() as db:
            reversal = None
            db.execute(
                "UPDATE transactions SET state = ?, updated_at = ?, response = ?, "
                "response_code = ?, detail = ?, answer = ? WHERE id = ?",
                (
                    state,
                    self._clock(),
                    response.response if response is not None else None,
                    response.code if response is not None else None,
                    detail,
                    response.answer if response is not None else None,
                    transaction_id,
                ),
            )
            if reversal_reason is not None:
                reversal = self._queue_reversal(db, transaction_id, reversal_reason)
            if voids is not None:
                self._no_longer_replayable(db, *voids, why="voided")
            stages.mark("outcome-row")
        if reversal is not None:
            self._queued += 1
        return reversal

    def _queue_reversal(self, db: sqlite3.Connection, transaction_id: int, reason: str) -> int:
        row = db.execute(
            "SELECT reversal_template FROM transactions WHERE id = ?", (transaction_id,)
        ).fetchone()
        if row is None or row[0] is None:
            raise JournalError(f"transaction {transaction_id} has nothing to reverse")
        now = self._clock()
        cursor = db.execute(
            "INSERT INTO reversals (transaction_id, created_at, updated_at, reason, fields, state) "
            "VALUES (?, ?, ?, ?, ?, 'queued')",
            (transaction_id, now, now, reason, row[0]),
        )
        # what is being reversed is no longer an answer a repetition may get (section 10)
        self._withdraw_earlier_tries(db, transaction_id)
        db.execute("UPDATE transactions SET answer = NULL WHERE id = ?", (transaction_id,))
        self._event(db, "reversal-queued", transaction=transaction_id, reason=reason)
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def recover_pending(self) -> int:
        """At start-up: every request still pending may have reached the host. Financial ones
        become reversals (reason 98); the others are closed as interrupted. Returns how many
        reversals were queued."""
        queued = 0
        with self._write() as db:
            rows = db.execute(
                "SELECT id, reversal_template FROM transactions WHERE state = 'pending'"
            ).fetchall()
            for transaction_id, template in rows:
                db.execute(
                    "UPDATE transactions SET state = 'interrupted', updated_at = ?, detail = ? "
                    "WHERE id = ?",
                    (self._clock(), "the agent stopped before the response", transaction_id),
                )
                if template is not None:
                    self._queue_reversal(db, transaction_id, "98")
                    queued += 1
            if rows:
                self._event(db, "recovered-pending", pending=len(rows), reversals=queued)
        self._queued += queued
        return queued

    @property
    def has_queued_reversals(self) -> bool:
        """Whether reversals wait to be sent, known without a query (asked before every
        financial request)."""
        return self._queued > 0

    @property
    def queued_reversals_count(self) -> int:
        """How many reversals wait to be sent, known without a query."""
        return self._queued

    # ------------------------------------------------------------------------- reversals

    def queued_reversals(self) -> list[Reversal]:
        return self._reversals("state = 'queued'", ())

    def reversal_counts(self, stuck_after: int) -> tuple[int, int]:
        """(queued, stuck): the reversals waiting to be sent, and how many of them have been
        tried ``stuck_after`` times or more. Counted, not read: asked every second."""
        queued, stuck = self._rows(
            "SELECT count(*), coalesce(sum(attempts >= ?), 0) FROM reversals "
            "WHERE state = 'queued'",
            (stuck_after,),
        )[0]
        return queued, stuck

    def _reversals(self, where: str, parameters: tuple[Any, ...]) -> list[Reversal]:
        rows = self._rows(
            "SELECT id, transaction_id, reason, fields, attempts FROM reversals "
            f"WHERE {where} ORDER BY id",
            parameters,
        )
        result = []
        for rid, tid, reason, fields, attempts in rows:
            stored = {int(n): v for n, v in json.loads(fields).items()}
            result.append(Reversal(rid, tid, reason, Message("0200", stored), attempts))
        return result

    def reversal_attempted(self, reversal_id: int, error: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE reversals SET attempts = attempts + 1, last_error = ?, updated_at = ? "
                "WHERE id = ?",
                (error, self._clock(), reversal_id),
            )

    def reversal_closed(
        self, reversal_id: int, response: Message, outcome: str, recheck_after: float = 0.0
    ) -> None:
        """The host answered a reversal with a code that closes it (``outcome`` of
        :func:`agent.wire.codes.reversal_outcome`); a conflict stays visible as such. A
        reversal closed as "nothing to reverse", or as a conflict by an answer without a MAC
        (hosts MAC approvals, not declines: it cannot be the host's for sure), is sent once
        more ``recheck_after`` seconds later (0: never); an answer to that recheck closes it
        for good."""
        # "nothing-to-reverse" (12, 25) is kept apart from "confirmed": a late approval of the
        # original proves the host answered it before the original reached it
        state = outcome if outcome in ("conflict", "nothing-to-reverse") else "confirmed"
        now = self._clock()
        unproven = state == "nothing-to-reverse" or (state == "conflict" and 64 not in response)
        recheck = unproven and recheck_after > 0
        recheck_at = self._monotonic() + recheck_after if recheck else None
        with self._write() as db:
            row = db.execute(
                "SELECT state, recheck_at IS NOT NULL FROM reversals WHERE id = ?", (reversal_id,)
            ).fetchone()
            if row is None or not (row[0] == "queued" or row[1]):
                return  # closed already: the answer to a try that was overtaken
            db.execute(
                "UPDATE reversals SET state = ?, attempts = attempts + 1, updated_at = ?, "
                "last_error = NULL, recheck_at = ?, recheck_boot = ? WHERE id = ?",
                (state, now, recheck_at, self._boot, reversal_id),
            )
            rechecked = {} if row[0] == "queued" else {"rechecked": True}
            self._event(
                db,
                "reversal-conflict" if state == "conflict" else "reversal-confirmed",
                reversal=reversal_id,
                response_code=response.text(39),
                outcome=outcome,
                **rechecked,
            )
        if row[0] == "queued":
            self._queued -= 1

    # Rechecks are timed on the monotonic clock of the boot that set them (section 8: a step of
    # the wall clock neither brings them forward nor puts them off); one of an earlier boot is
    # due at once.
    _RECHECK_DUE = "(recheck_boot IS NOT ? OR recheck_at <= ?)"

    def reversals_to_recheck(self) -> list[Reversal]:
        """Reversals closed as "nothing to reverse", or as a conflict without a MAC, whose
        recheck is due."""
        return self._reversals(
            "state IN ('nothing-to-reverse', 'conflict') AND recheck_at IS NOT NULL "
            f"AND {self._RECHECK_DUE}",
            (self._boot, self._monotonic()),
        )

    def recheck_in(self) -> float | None:
        """Seconds until the next recheck is due (0 or less: due now), None when none waits."""
        earlier_boot, soonest = self._rows(
            "SELECT count(recheck_at) FILTER (WHERE recheck_boot IS NOT ?), "
            "min(recheck_at) FILTER (WHERE recheck_boot IS ?) FROM reversals",
            (self._boot, self._boot),
        )[0]
        if earlier_boot:
            return 0.0
        return None if soonest is None else soonest - self._monotonic()

    def rechecks_waiting(self) -> int:
        return self._rows("SELECT count(*) FROM reversals WHERE recheck_at IS NOT NULL")[0][0]

    def postpone_recheck(self, reversal_id: int, seconds: float) -> None:
        """A recheck that got no closing answer goes again ``seconds`` from now."""
        with self._write() as db:
            db.execute(
                "UPDATE reversals SET recheck_at = ?, recheck_boot = ? "
                "WHERE id = ? AND recheck_at IS NOT NULL",
                (self._monotonic() + seconds, self._boot, reversal_id),
            )

    def reverse_undelivered(self, transaction_id: int) -> int | None:
        """The app could not be given the approval of ``transaction_id``: queue its reversal
        (06) unless it has one, or is no reversible approval. Returns the reversal id, if one
        was queued; the replayable answer goes in the same commit."""
        with self._write() as db:
            row = db.execute(
                "SELECT t.response_code, t.reversal_template IS NOT NULL, EXISTS (SELECT 1 "
                "FROM reversals r WHERE r.transaction_id = t.id) FROM transactions t "
                "WHERE t.id = ?",
                (transaction_id,),
            ).fetchone()
            if row is None or not codes.approved(row[0] or "") or not row[1] or row[2]:
                return None
            reversal = self._queue_reversal(db, transaction_id, "06")
            self._event(db, "undelivered-approval-reversed", transaction=transaction_id)
        self._queued += 1
        return reversal

    def sent_with_stan(self, wire_stan: str) -> Sent | None:
        """The latest reversible request sent as ``wire_stan``: what an answer nobody waited
        for may be the answer to."""
        rows = self._rows(
            "SELECT t.id, t.mti, t.state, t.boot, t.uptime, t.reversal_template "
            "FROM transactions t WHERE t.stan = ? AND t.reversal_template IS NOT NULL "
            "ORDER BY t.id DESC LIMIT 1",
            (wire_stan,),
        )
        if not rows:
            return None
        tid, mti, state, boot, uptime, template = rows[0]
        sent_with = json.loads(template)
        signed_in_boot, _, signed_in_at = self._meta("signin.uptime", "").partition(" ")
        keys_changed = bool(signed_in_boot) and (
            boot != signed_in_boot or uptime is None or uptime < float(signed_in_at)
        )
        terminal = (str(sent_with.get("41", "")).strip(), str(sent_with.get("42", "")).strip())
        return Sent(tid, mti, state, keys_changed, terminal)

    def reverse_late_approval(self, transaction_id: int, response: Message) -> int | None:
        """An authenticated approval of ``transaction_id`` came after its request was answered
        otherwise (refused first, timed out, answered locally): queue its reversal (06), unless
        it was approved or is being reversed already. A reversal the host closed as "nothing
        to reverse" (12, 25) was answered before the original reached it: the late approval
        proves otherwise, so it goes again. Returns the reversal id, if one was queued."""
        with self._write() as db:
            row = db.execute(
                "SELECT t.state, t.response_code, EXISTS (SELECT 1 FROM reversals r "
                "WHERE r.transaction_id = t.id AND r.state != 'nothing-to-reverse') "
                "FROM transactions t WHERE t.id = ? AND t.reversal_template IS NOT NULL",
                (transaction_id,),
            ).fetchone()
            if row is None or row[0] == "pending" or codes.approved(row[1] or "") or row[2]:
                return None
            # the new reversal takes the place of a recheck of the one closed as nothing
            db.execute(
                "UPDATE reversals SET recheck_at = NULL WHERE transaction_id = ?",
                (transaction_id,),
            )
            reversal = self._queue_reversal(db, transaction_id, "06")
            self._event(
                db,
                "late-approval-reversed",
                transaction=transaction_id,
                first_answer=row[1],
                late_answer=response.text(39, ""),
            )
        self._queued += 1
        return reversal

    # -------------------------------------------------------------------------- STAN map

    def wire_stan(self, app_stan: str, batch: str | None = None) -> tuple[str, str] | None:
        """(wire STAN, batch) of the latest request the app numbered ``app_stan`` in ``batch``
        (the current batch when not given): what a reference to it must say to the host. A
        reference is never looked up in another batch (section 10)."""
        rows = self._rows(
            "SELECT stan, batch FROM transactions WHERE app_stan = ? AND batch = ? "
            "ORDER BY id DESC LIMIT 1",
            (app_stan, batch or self._batch_text()),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def reversal_of(self, wire_stan: str, batch: str) -> str | None:
        """The state of the agent's own reversal of the request sent as ``wire_stan`` in
        ``batch`` (queued, confirmed, conflict, nothing-to-reverse), or ``None`` when it has
        none."""
        rows = self._rows(
            "SELECT r.state FROM reversals r JOIN transactions t ON t.id = r.transaction_id "
            "WHERE t.stan = ? AND t.batch = ? ORDER BY r.id DESC LIMIT 1",
            (wire_stan, batch),
        )
        return rows[0][0] if rows else None

    def no_longer_replayable(self, wire_stan: str, batch: str, why: str) -> None:
        """The request sent as ``wire_stan`` in ``batch`` is being reversed or was voided by the
        app: a repetition of it must not get its approval again (section 10), also one it has
        not got yet (a void approved while its original is still in flight): its replay key
        goes too, so the answer it records later is never replayed."""
        with self._write() as db:
            self._no_longer_replayable(db, wire_stan, batch, why)

    def _no_longer_replayable(
        self, db: sqlite3.Connection, wire_stan: str, batch: str, why: str
    ) -> None:
        ids = db.execute(
            "SELECT id FROM transactions WHERE stan = ? AND batch = ?", (wire_stan, batch)
        ).fetchall()
        for (transaction_id,) in ids:
            self._withdraw_earlier_tries(db, transaction_id)
        changed = db.execute(
            "UPDATE transactions SET answer = NULL, replay_key = NULL WHERE stan = ? "
            "AND batch = ? AND (answer IS NOT NULL OR replay_key IS NOT NULL)",
            (wire_stan, batch),
        ).rowcount
        if changed:
            self._event(db, "answer-withdrawn", stan=wire_stan, batch=batch, why=why)

    @staticmethod
    def _withdraw_earlier_tries(db: sqlite3.Connection, transaction_id: int) -> None:
        """The answers of the earlier tries of the app request ``transaction_id`` is a try of
        (same app STAN and replay key, in its batch: the 97 a recovery retried after): once
        the try that answered it is reversed or voided, a repetition is a new request, not the
        first try's refusal again (section 10)."""
        db.execute(
            "UPDATE transactions SET answer = NULL WHERE answer IS NOT NULL AND id IN ("
            "SELECT e.id FROM transactions t JOIN transactions e ON e.app_stan = t.app_stan "
            "AND e.replay_key = t.replay_key AND e.batch = t.batch AND e.id < t.id "
            "WHERE t.id = ?)",
            (transaction_id,),
        )

    def replay(self, app_stan: str, replay_key: str, window: float) -> tuple[int, Message] | None:
        """The answer the app got for the very same request (same app STAN and replay key)
        within ``window`` seconds of the monotonic clock, in the current batch, provided it is
        still true: nothing reversed, being reversed or voided is replayed (section 10). An
        answer is kept only when its request completes, and withdrawn in the commit that queues
        its reversal, when the app sends its 0400 and when its void is approved: one still
        there is true."""
        rows = self._rows(
            f"SELECT id, answer FROM transactions WHERE {_TRIES_OF} AND answer IS NOT NULL "
            "ORDER BY id DESC LIMIT 1",
            self._tries_of(app_stan, replay_key, window),
        )
        if not rows:
            return None
        stored = json.loads(rows[0][1])
        fields = {
            int(n): bytes.fromhex(v[1:]) if v.startswith("#") else v[1:]
            for n, v in stored["fields"].items()
        }
        return rows[0][0], Message(stored["mti"], fields)

    def _tries_of(self, app_stan: str, replay_key: str, window: float) -> tuple[object, ...]:
        """The parameters of :data:`_TRIES_OF`: the tries of this very request (same app STAN
        and replay key) within ``window`` seconds of this boot's monotonic clock, in the
        current batch."""
        return app_stan, replay_key, self._batch_text(), self._boot, self._monotonic() - window

    def unanswered_try(self, app_stan: str, replay_key: str, window: float) -> str | None:
        """The wire STAN of the last try of the very same request (as :meth:`replay` matches
        it) when the host may have taken it and the app got none of its answer (none kept for
        a replay, or one withdrawn): a repetition goes again under it, so that the host can
        tell the repeat (94, or its first answer), never as a second transaction."""
        rows = self._rows(
            f"SELECT stan, state FROM transactions WHERE {_TRIES_OF} ORDER BY id DESC LIMIT 1",
            self._tries_of(app_stan, replay_key, window),
        )
        if not rows or rows[0][1] in ("pending", "not-sent"):
            return None  # in flight (a repetition waits for it), or never sent
        return str(rows[0][0])

    def recent_app_stans(self, window: float) -> list[tuple[str, float]]:
        """(app STAN, age in seconds) of the requests recorded within ``window`` seconds of
        this boot, any batch: what a repetition may be of (:meth:`replay` decides)."""
        now = self._monotonic()
        rows = self._rows(
            "SELECT app_stan, max(uptime) FROM transactions WHERE app_stan IS NOT NULL "
            "AND boot = ? AND uptime >= ? GROUP BY app_stan",
            (self._boot, now - window),
        )
        return [(stan, now - at) for stan, at in rows]

    @property
    def replay_secret(self) -> bytes:
        """The key of the card digests in replay keys, read (or made) at the first repetition
        the service looks for: a technician's command never makes the file."""
        if self._replay_secret is None:
            self._replay_secret = self._load_replay_secret()
        return self._replay_secret

    def _load_replay_secret(self) -> bytes:
        """The key lives in a file of its own beside the journal (mode 0600), never in a row:
        a journal copied for support must not let anyone test card numbers against its
        digests. A file that cannot be read or written leaves a key for this run only
        (repetitions after a restart are then new requests)."""
        path = self.path.with_name(self.path.name + ".replay-key")
        with contextlib.suppress(OSError):
            secret = path.read_bytes()
            if len(secret) == 32:
                return secret
        secret = os.urandom(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, secret)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("replay key %s not kept (%s): it lasts this run only", path, exc)
        return secret

    # ---------------------------------------------------------------- sign-ins and events

    def record_signin(
        self,
        scheme: str,
        kcvs: dict[str, str],
        host_time: str | None,
        tid: str = "",
        mid: str = "",
        *,
        batch: int | None = None,
        layout: int | None = None,
        refused: dict[str, str] | None = None,
    ) -> None:
        """A successful sign-in; ``batch`` (the host's, 60.2 of its 0810) becomes the current
        batch in the same commit. ``refused``: the schemes the host refused on the way, with its
        answers (DESIGN.md section 4), kept for the self-check with the last sign-in."""
        refused = refused or {}
        with self._write() as db:
            # every request recorded before now was sent under the keys this sign-in replaces:
            # by this boot's monotonic clock, not the wall clock (a clock sync may step it back)
            self._set_meta(db, "signin.uptime", f"{self._boot} {self._monotonic()!r}")
            db.execute(
                "INSERT INTO signins (at, scheme, kcvs, host_time, tid, mid) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self._clock(), scheme, json.dumps(kcvs), host_time, tid, mid),
            )
            # in meta rather than a new column: an older agent (a rolled-back update) can still
            # open this journal
            self._set_meta(db, "signin.refused", json.dumps(refused))
            if batch is not None:
                self._set_meta(db, "batch", str(batch))
            self._event(
                db, "signed-in", scheme=scheme, layout=layout, kcvs=kcvs, tid=tid, batch=batch,
                refused=refused,
            )  # fmt: skip
        if batch is not None:
            self._batch = batch

    def last_signin(self) -> dict[str, Any] | None:
        """The last successful sign-in; ``refused`` maps the schemes the host refused before
        it approved ``scheme`` to its answers (empty for a sign-in recorded before they were)."""
        rows = self._rows(
            "SELECT at, scheme, kcvs, host_time, tid, mid, "
            "(SELECT value FROM meta WHERE key = 'signin.refused') "
            "FROM signins ORDER BY id DESC LIMIT 1"
        )
        if not rows:
            return None
        at, scheme, kcvs, host_time, tid, mid, refused = rows[0]
        return {
            "at": at,
            "scheme": scheme,
            "kcvs": json.loads(kcvs),
            "host_time": host_time,
            "tid": tid or "",
            "mid": mid or "",
            "refused": json.loads(refused or "{}"),
        }

    def remember(self, key: str, value: str) -> None:
        """Keep a fact between runs (the module's firmware, say)."""
        with self._write() as db:
            self._set_meta(db, f"fact.{key}", value)

    def recall(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (f"fact.{key}",))
        return rows[0][0] if rows else None

    def event(self, kind: str, **detail: Any) -> None:
        with self._write() as db:
            self._event(db, kind, **detail)

    def _event(self, db: sqlite3.Connection, kind: str, **detail: Any) -> None:
        self._insert_event(db, Note(self._clock(), kind, detail, _detail_text(detail)))

    def _insert_event(self, db: sqlite3.Connection, event: Note) -> None:
        at, kind, detail = event.at, event.kind, event.detail
        db.execute("INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)", (at, kind, event.text))
        forwarded = None
        if self._forward is not None:
            try:
                forwarded = self._forward(kind, detail)
            except Exception:  # telemetry must never cost the journal an event
                log.exception("telemetry: event %s not forwarded", kind)
        if forwarded is not None:
            db.execute(
                "INSERT INTO outbox (at, kind, detail) VALUES (?, ?, ?)",
                (at, forwarded[0], json.dumps(forwarded[1], ensure_ascii=False, sort_keys=True)),
            )
            self.outbox_written += 1
            dropped = db.execute(
                "DELETE FROM outbox WHERE id <= (SELECT max(id) FROM outbox) - ?",
                (self._outbox_max,),
            ).rowcount
            if dropped:
                self._set_meta(db, "outbox.dropped", str(self._outbox_dropped(db) + dropped))

    # ---------------------------------------------------------------------------- outbox

    def outbox(self, limit: int = 100) -> list[tuple[int, float, str, dict[str, Any]]]:
        """The oldest ``limit`` events waiting for the broker: (id, at, kind, detail)."""
        rows = self._rows("SELECT id, at, kind, detail FROM outbox ORDER BY id LIMIT ?", (limit,))
        return [(i, at, kind, json.loads(detail)) for i, at, kind, detail in rows]

    def _outbox_ids_above(self, floor: int) -> None:
        """Raise the outbox's AUTOINCREMENT sequence to ``floor`` (never lower it)."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO sqlite_sequence (name, seq) "
                       "SELECT 'outbox', 0 WHERE NOT EXISTS "
                       "(SELECT 1 FROM sqlite_sequence WHERE name = 'outbox')")  # fmt: skip
            db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'outbox'",
                       (floor,))  # fmt: skip

    def outbox_sent(self, ids: list[int]) -> None:
        """The broker has these (PUBACK)."""
        with self._write() as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    @property
    def outbox_dropped(self) -> int:
        """Events dropped because the outbox was full, since the journal was made."""
        with self._lock:
            return self._outbox_dropped(self._db)

    @staticmethod
    def _outbox_dropped(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = 'outbox.dropped'").fetchone()
        return int(row[0]) if row else 0

    def events(
        self, since: float = 0.0, limit: int = -1, newest: bool = True
    ) -> list[dict[str, Any]]:
        """The events since ``since``, oldest first; only ``limit`` of them, if given: the
        newest, or with ``newest`` false the oldest."""
        self._caught_up()
        order = "DESC" if newest else "ASC"
        rows = self._rows(
            f"SELECT at, kind, detail FROM events WHERE at >= ? ORDER BY id {order} LIMIT ?",
            (since, limit),
        )
        if newest:
            rows.reverse()
        return [{"at": at, "kind": kind, **json.loads(detail)} for at, kind, detail in rows]

    def count_since(self, since: float) -> int:
        """How many events and transactions there are since ``since``."""
        [(events,)] = self._rows("SELECT count(*) FROM events WHERE at >= ?", (since,))
        [(rows,)] = self._rows("SELECT count(*) FROM transactions WHERE created_at >= ?", (since,))
        return events + rows

    def last_event_at(self, kind: str, **matching: object) -> float | None:
        """When the newest event of ``kind`` whose detail holds ``matching`` was recorded; None
        when the journal keeps none (events are pruned with the rest)."""
        self._caught_up()
        with self._lock:
            try:
                newest_first = self._db.execute(
                    "SELECT at, detail FROM events WHERE kind = ? ORDER BY id DESC", (kind,)
                )
                for at, detail in newest_first:
                    said = json.loads(detail)
                    if all(said.get(key) == value for key, value in matching.items()):
                        return float(at)
            except sqlite3.Error as exc:
                raise JournalError(f"journal {self.path} read failed: {exc}") from None
        return None

    def transactions(
        self, since: float = 0.0, limit: int = -1, newest: bool = True
    ) -> list[dict[str, Any]]:
        """The transactions since ``since``, oldest first; only ``limit`` of them, if given:
        the newest, or with ``newest`` false the oldest."""
        self._caught_up()
        order = "DESC" if newest else "ASC"
        rows = self._rows(
            "SELECT id, created_at, mti, stan, state, request, response, response_code, detail "
            f"FROM transactions WHERE created_at >= ? ORDER BY id {order} LIMIT ?",
            (since, limit),
        )
        if newest:
            rows.reverse()
        keys = (
            "id",
            "at",
            "mti",
            "stan",
            "state",
            "request",
            "response",
            "response_code",
            "detail",
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]
