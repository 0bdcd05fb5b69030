"""Group commit: one writer thread, batches of jobs sharing one fsync each.

Every change to the store is a job run in the writer thread. Jobs that queue
up while a commit is in flight are committed together: their blobs share one
``fdatasync`` of the pack segment and their rows one database commit. Each job
is isolated from the others so that one refused job does not spoil its batch
(see ``CommitQueue._commit``).
A job's future resolves only after the commit is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from palais.mailbox.errors import TemporaryFailure
from palais.mailbox.model import MailboxEvent
from palais.mailbox.ports import BlobLocation, MessageBytes
from palais.storage.blobs import sha256_hex
from palais.storage.engine import WriteLock
from palais.storage.sql import EVIDENCE_SEGMENT

T = TypeVar("T")
log = logging.getLogger("palais.storage.writer")


@dataclass
class WriteContext:
    """What a job may use and leave behind besides its rows."""

    locations: dict[str, BlobLocation] = field(default_factory=dict)
    # The sha256 of each blob handed with the job, by the blob's identity:
    # hashed once, when appended (hashing releases the GIL, a costly handoff).
    hashes: dict[int, str] = field(default_factory=dict)
    events: list[MailboxEvent] = field(default_factory=list)
    # sha256 -> where its bytes lie, for blobs no message holds any more.
    erase_after_commit: dict[str, BlobLocation] = field(default_factory=dict)
    # Facts that never change once written (a box's id by owner and name),
    # shared by every job of this writer.
    cache: dict[Any, Any] = field(default_factory=dict)
    # The message a filing job has just inserted (its row id, bytes and
    # summary), for the records its plan carries (the deposit receipt).
    filed: Any = None
    # What the job did that the batch's finishers act on ("evidence").
    notes: set[str] = field(default_factory=set)
    # Receipts the job issued whose mails the batch's finisher seals and
    # files (all at once: their writing goes to a worker process).
    receipts: list[Any] = field(default_factory=list)
    # Shared by the jobs of one attempt at a batch (and its finishers), in
    # their transaction: what a job leaves for the next (the evidence log's
    # head). A job refused in its savepoint empties it.
    batch: dict[str, Any] = field(default_factory=dict)

    def sha256(self, data: bytes) -> str:
        known = self.hashes.get(id(data))
        return known if known is not None else sha256_hex(data)


Work = Callable[[Connection, WriteContext], T]


class Together(Generic[T]):
    """A job's work that can also run with others of its kind (consecutive
    in the batch) in a few statements for all of them: a filing's rows.

    The writer tries ``together`` on a batch's first attempt; ``None`` means
    "not these" (each job then runs alone, as ``__call__``), and a refusal
    sends the batch to its per-job savepoints as for any job, where each runs
    alone. Both ways must leave the same rows.
    """

    def __call__(self, conn: Connection, ctx: WriteContext) -> T:
        raise NotImplementedError

    @classmethod
    def together(
        cls, conn: Connection, jobs: Sequence[tuple[Any, WriteContext]]
    ) -> Sequence[T] | None:
        return None


# Runs once per batch after its jobs, in their transaction (the receipts'
# mails, the evidence log's signed tree head), given every job's context.
Finisher = Callable[[Connection, Sequence[WriteContext]], None]


class RefuseJobs(Exception):
    """Raised by a finisher: the jobs of these contexts cannot be carried out
    (their receipts cannot be sealed); the batch runs again without them."""

    def __init__(self, contexts: Sequence[WriteContext], error: Exception) -> None:
        super().__init__(error)
        self.contexts = contexts
        self.error = error


@dataclass
class _Job(Generic[T]):
    work: Work[T]
    blobs: Sequence[bytes]
    # Whom to tell: none for a batch its caller runs itself (``commit_batch``).
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[T] | None = None
    context: WriteContext = field(default_factory=WriteContext)


_STOP = object()


# PostgreSQL's deadlock and serialization failures: another node's
# transaction, not the job, is in the way. The attempt is rolled back and the
# batch runs again once the other has committed.
_CONFLICTS = frozenset({"40P01", "40001"})
_CONFLICT_RETRIES = 5


def _is_conflict(error: BaseException) -> bool:
    # Through SQLAlchemy the driver's error is wrapped; the hot paths' raw
    # cursors raise it as the driver does (psycopg: .sqlstate).
    driver_error = error.orig if isinstance(error, DBAPIError) else error
    return getattr(driver_error, "sqlstate", None) in _CONFLICTS


class _Conflict(Exception):
    """The attempt met another transaction's locks; the batch is run again."""


class _Refused(Exception):
    """A job failed outside a savepoint: the attempt is rolled back whole."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class CommitQueue:
    def __init__(
        self,
        engine: Engine,
        blobs: MessageBytes,
        publish: Callable[[list[MailboxEvent]], None],
        *,
        max_batch: int = 256,
        lock: WriteLock | None = None,
    ) -> None:
        self._engine = engine
        # On SQLite the writer keeps its connection from one batch to the
        # next: checking it out of the pool and back cost 70 us a batch. On
        # PostgreSQL it goes back to the pool, whose check before handing
        # it out again (a restarted server) a held one would miss.
        self._hold = engine.dialect.name == "sqlite"
        self._held: Connection | None = None
        # Held around each transaction when other processes write the same
        # SQLite file (the filing process, a command).
        self._lock: contextlib.AbstractContextManager[Any] = lock or contextlib.nullcontext()
        self._lock_file = lock
        self._blobs = blobs
        self._publish = publish
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="palais-writer", daemon=True)
        self.batches = 0
        self.jobs = 0
        self._cache: dict[Any, Any] = {}
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="palais-fsync")
        # Told the sha256 of every blob whose bytes were erased (in the writer thread).
        self.on_erased: list[Callable[[str], None]] = []
        self.finishers: list[Finisher] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish every queued job, then stop. Safe to call twice."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._syncer.shutdown(wait=True)
        self._release()
        if self._lock_file is not None:
            self._lock_file.close()

    async def submit(self, work: Work[T], blobs: Sequence[bytes] = ()) -> T:
        if not self._thread.is_alive():
            # Shutting down: the client is told to come back (4xx), nothing half-done.
            raise restarting("writer stopped")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(work, blobs, loop, fut))
        return await fut

    def run_now(self, work: Work[T], blobs: Sequence[bytes] = ()) -> T:
        """Run a job synchronously in the caller's thread (CLI, before start)."""
        assert not self._thread.is_alive(), "run_now is for when the writer is stopped"
        ctx = WriteContext(cache=self._cache)
        self._append_blobs([(ctx, blobs)])
        self._blobs.sync()
        with self._lock, self._engine.begin() as conn:
            result = work(conn, ctx)
            for finish in self.finishers:
                finish(conn, [ctx])
        self._erase(ctx.erase_after_commit)
        self._publish(ctx.events)
        return result

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A batch's transaction, on the held connection when there is one."""
        if not self._hold:
            with self._engine.begin() as pooled:
                yield pooled
            return
        held = self._held
        if held is None:
            held = self._held = self._engine.connect()
        try:
            with held.begin():
                yield held
        except BaseException:
            self._release()  # whatever went wrong, the next batch starts on a fresh one
            raise

    def _release(self) -> None:
        conn, self._held = self._held, None
        if conn is not None:
            conn.close()

    def _append_blobs(self, jobs: list[tuple[WriteContext, Sequence[bytes]]]) -> None:
        """Every blob of a batch written to the pack at once."""
        datas = [data for _, blobs in jobs for data in blobs]
        if not datas:
            return
        locations = iter(self._blobs.append_many(datas))
        for ctx, blobs in jobs:
            for data in blobs:
                sha = sha256_hex(data)
                ctx.hashes[id(data)] = sha
                ctx.locations[sha] = next(locations)

    def _erase(self, blobs: dict[str, BlobLocation]) -> None:
        for sha, where in blobs.items():
            if where.segment != EVIDENCE_SEGMENT:
                # (A receipt mail deleted by its holder: its bytes stay in the
                # evidence log, which is never purged.)
                try:
                    self._blobs.erase(where)
                except OSError:
                    log.exception("could not erase deleted blob bytes at %s", where)
            self.tell_erased(sha)

    def tell_erased(self, sha: str) -> None:
        """Those who keep facts about stored bytes forget these (erased here,
        or by the filing process)."""
        for listener in self.on_erased:
            listener(sha)

    @staticmethod
    def _bare(conn: Connection, job: _Job[Any]) -> tuple[bool, Any]:
        return (True, _unisolated(lambda: job.work(conn, job.context)))

    def _bare_run(self, conn: Connection, run: list[_Job[Any]]) -> list[tuple[bool, Any]]:
        """Consecutive jobs of one ``Together`` kind, together if they can be."""
        if len(run) > 1:
            kind = run[0].work
            assert isinstance(kind, Together)
            jobs = [(job.work, job.context) for job in run]
            results = _unisolated(lambda: type(kind).together(conn, jobs))
            if results is not None:
                return [(True, result) for result in results]
        return [self._bare(conn, job) for job in run]

    def _isolated(self, conn: Connection, job: _Job[Any]) -> tuple[bool, Any]:
        savepoint = conn.begin_nested()
        try:
            result = job.work(conn, job.context)
        except Exception as error:  # the job's own refusal or bug
            if _is_conflict(error):
                raise _Conflict() from error
            savepoint.rollback()
            _forget(job.context)
            # What earlier jobs left for the next may count this one's work.
            job.context.batch.clear()
            return (False, error)
        savepoint.commit()
        return (True, result)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Job[Any]] = [first]
            stop_after = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop_after = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop_after:
                return

    def commit_batch(
        self, works: Sequence[tuple[Work[Any], Sequence[bytes]]]
    ) -> tuple[list[tuple[bool, Any]], list[MailboxEvent]]:
        """Carry out these jobs as one batch in the caller's thread, which is
        this queue's writer (the filing process's: its one thread reads the
        jobs, commits them and answers): each job's (ok, result or error),
        and the batch's events. The writer thread must not be running."""
        assert not self._thread.is_alive(), "commit_batch is for a queue without its thread"
        batch: list[_Job[Any]] = [_Job(work, blobs) for work, blobs in works]
        outcomes = self._carry_out(batch)
        return outcomes, self._committed(batch)

    def _commit(self, batch: list[_Job[Any]]) -> None:
        outcomes = self._carry_out(batch)
        events = self._committed(batch)
        # One wake-up of each waiting event loop for the whole batch (each
        # costs the writer a system call and a turn at the GIL), events
        # first, so that a session's listener hears of a change no later
        # than the command that made it completes.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job[Any], bool, Any]]] = {}
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            assert job.loop is not None
            by_loop.setdefault(job.loop, []).append((job, ok, value))
        for index, (loop, done) in enumerate(by_loop.items()):
            # The hub lives on the gateway's one event loop: the first job's.
            _call(loop, _deliver, self._publish if index == 0 else None, events, done)

    def _committed(self, batch: list[_Job[Any]]) -> list[MailboxEvent]:
        """After a batch: its counts, the bytes it freed erased, its events."""
        self.batches += 1
        self.jobs += len(batch)
        events: list[MailboxEvent] = []
        for job in batch:
            self._erase(job.context.erase_after_commit)
            events.extend(job.context.events)
        return events

    def _carry_out(self, batch: list[_Job[Any]]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        try:
            for job in batch:
                job.context.cache = self._cache
            self._append_blobs([(job.context, job.blobs) for job in batch])
            # The pack's fdatasync runs while the rows are written; the commit
            # waits for it, so no row ever points at bytes not yet on disk.
            synced = self._syncer.submit(self._blobs.sync)
            # Jobs are seldom refused: the batch first runs without a savepoint
            # per job (SQLAlchemy's savepoints cost more than a filing's rows).
            # If one job fails, that attempt is rolled back whole and the batch
            # runs again with each job in its own savepoint, so that only the
            # refused job fails. A batch of one needs no second attempt.
            isolate = False
            conflicts = 0
            # Jobs a finisher refused, by index, with their error: left out
            # of the attempts that follow.
            refused_by_finisher: dict[int, Exception] = {}
            while True:
                outcomes = []
                scratch: dict[str, Any] = {}
                for job in batch:
                    job.context.batch = scratch
                try:
                    with self._lock, self._transaction() as conn:
                        run: list[_Job[Any]] = []  # consecutive jobs of one Together kind
                        for index, job in enumerate(batch):
                            excluded = refused_by_finisher.get(index)
                            # (isolated attempts never start a run)
                            if run and (
                                excluded is not None or type(job.work) is not type(run[0].work)
                            ):
                                outcomes.extend(self._bare_run(conn, run))
                                run = []
                            if excluded is not None:
                                outcomes.append((False, excluded))
                            elif isolate:
                                outcomes.append(self._isolated(conn, job))
                            elif isinstance(job.work, Together):
                                run.append(job)
                            else:
                                outcomes.append(self._bare(conn, job))
                        if run:
                            outcomes.extend(self._bare_run(conn, run))
                        contexts = [
                            j.context for j, (ok, _) in zip(batch, outcomes, strict=True) if ok
                        ]
                        for finish in self.finishers:
                            finish(conn, contexts)
                        synced.result()
                except (_Refused, _Conflict, RefuseJobs) as failed:
                    for job in batch:
                        _forget(job.context)
                    # Facts cached by the rolled-back attempt may not hold.
                    self._cache.clear()
                    if isinstance(failed, RefuseJobs):
                        for index, job in enumerate(batch):
                            if any(job.context is c for c in failed.contexts):
                                refused_by_finisher[index] = failed.error
                        if len(refused_by_finisher) == len(batch):
                            outcomes = [(False, refused_by_finisher[i]) for i in range(len(batch))]
                            break
                        continue
                    if isinstance(failed, _Conflict):
                        conflicts += 1
                        if conflicts > _CONFLICT_RETRIES:
                            raise failed.__cause__ or failed from None
                        log.info("batch met another node's transaction; running it again")
                        continue
                    refused = failed
                    if len(batch) - len(refused_by_finisher) == 1:
                        # The one job left is the refused one.
                        outcomes = [
                            (False, refused_by_finisher.get(i, refused.error))
                            for i in range(len(batch))
                        ]
                        break
                    isolate = True
                    continue
                break
        except Exception as error:
            log.exception("commit of a batch of %d jobs failed", len(batch))
            outcomes = [(False, error)] * len(batch)
            for job in batch:
                _forget(job.context)
        return outcomes


def restarting(reason: str) -> TemporaryFailure:
    """What a client is told when its change cannot be written now because a
    writer is stopping or gone (4xx: nothing half-done, send again)."""
    return TemporaryFailure("The gateway is restarting, please try again shortly", reason=reason)


def _unisolated(work: Callable[[], T]) -> T:
    """Run work outside any savepoint: its failure ends the attempt, as a
    conflict with another node's transaction or as a refusal."""
    try:
        return work()
    except Exception as error:  # the job's own refusal or bug
        if _is_conflict(error):
            raise _Conflict() from error
        raise _Refused(error) from error


def _forget(ctx: WriteContext) -> None:
    """What a rolled-back attempt of a job left in its context."""
    ctx.events.clear()
    ctx.erase_after_commit.clear()
    ctx.notes.clear()
    ctx.receipts.clear()
    ctx.filed = None


def _call(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # that loop has closed (its caller is gone); the commit stands
        log.debug("event loop closed before a commit outcome could be delivered")


def _deliver(
    publish: Callable[[list[MailboxEvent]], None] | None,
    events: list[MailboxEvent],
    done: list[tuple[_Job[Any], bool, Any]],
) -> None:
    """On a job's event loop: the batch's events, then its jobs' outcomes."""
    try:
        if publish is not None and events:
            publish(events)
    finally:  # a listener's failure leaves no submitter waiting
        for job, ok, value in done:
            assert job.future is not None
            _resolve(job.future, ok, value)


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the waiter went away (client disconnected); the work is done
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)
