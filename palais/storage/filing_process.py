"""SMTP ingest's filings carried out in a process of their own, on a second core.

One gateway process holds one interpreter lock: its event loop (SMTP, TLS,
the message's checks and plan) and its writer (the filing's rows, the
receipts' evidence, their mails, the tree head) took turns at it, and
ingest was bound by their sum. Here the filings whose records are only
their receipts (nearly all of SMTP ingest) are sent, plan and bytes, to a
process with its own writer, its own blob segment and its own evidence
service; everything else stays on the gateway's writer. Both write the
one SQLite file, one transaction at a time (``WriteLock``): each reads the
boxes' UIDs and the evidence log's head in its transaction, as nodes on
PostgreSQL do, so the two orders stay one.

A filing's outcome comes back after its commit, its batch's mailbox events
first, so that a session hears of a message no later than its 250 is sent.
While the process is not there (starting, ended), the gateway's writer
files in its place; a filing in flight when it ended is answered 451.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import io
import itertools
import logging
import multiprocessing
import pickle
import signal
import socket
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from palais.mailbox.model import MailboxEvent
from palais.mailbox.ports import EvidenceService
from palais.storage.filings import Filing
from palais.storage.messages import FiledMessage
from palais.storage.writer import CommitQueue, restarting

log = logging.getLogger("palais.storage.filing_process")

_HEADER = 4
# A process that ended is started again after this, then twice as long up to the cap.
_RESTART_FIRST = 0.5
_RESTART_CAP = 30.0


def _frame(message: Any) -> bytes:
    buffer = io.BytesIO()
    buffer.write(bytes(_HEADER))
    _FramePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(message)
    buffer.seek(0)
    buffer.write((buffer.getbuffer().nbytes - _HEADER).to_bytes(_HEADER, "big"))
    return buffer.getvalue()


class _Reducers(dict[type, Callable[[Any], Any]]):
    """The frames' dispatch table: each type's reducer made at its first
    frame. Dataclasses go as their class and field values, UTC times as
    microseconds, enumerations as their value: a filing's pickle and
    unpickle took 90 us by copyreg and dataclasses' ``__getstate__``, 60
    us this way. Other types are not in it (KeyError: pickle's default)."""

    def __missing__(self, kind: type) -> Callable[[Any], Any]:
        if kind is datetime:
            reduce: Callable[[Any], Any] = _reduce_datetime
        elif isinstance(kind, enum.EnumMeta):
            reduce = _reduce_enum
        elif issubclass(kind, type):
            # A class whose class is not ``type`` (an enumeration's): by its
            # name, as pickle would, without a KeyError for it every frame.
            reduce = _reduce_class
        elif dataclasses.is_dataclass(kind) and _positional(kind):
            reduce = _fields_reducer(kind)
        else:
            raise KeyError(kind)
        self[kind] = reduce
        return reduce


class _FramePickler(pickle.Pickler):
    dispatch_table = _Reducers()


def _positional(kind: type) -> bool:
    """Its constructor takes every field, in order."""
    return all(f.init and not f.kw_only for f in dataclasses.fields(kind))


def _fields_reducer(kind: type) -> Callable[[Any], Any]:
    names = tuple(f.name for f in dataclasses.fields(kind))

    def reduce(obj: Any) -> Any:
        return kind, tuple([getattr(obj, name) for name in names])

    return reduce


def _reduce_class(kind: type) -> str:
    return kind.__qualname__


def _reduce_enum(member: enum.Enum) -> Any:
    return type(member), (member._value_,)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _reduce_datetime(moment: datetime) -> Any:
    if moment.tzinfo is not UTC:
        return moment.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
    return _utc, ((moment - _EPOCH) // _MICROSECOND,)


def _utc(microseconds: int) -> datetime:
    return _EPOCH + timedelta(microseconds=microseconds)


class _Frames:
    """Length-prefixed pickles out of a byte stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        out: list[Any] = []
        start = 0
        while len(buffer) - start >= _HEADER:
            size = int.from_bytes(buffer[start : start + _HEADER], "big")
            end = start + _HEADER + size
            if len(buffer) < end:
                break
            out.append(pickle.loads(buffer[start + _HEADER : end]))
            start = end
        del buffer[:start]
        return out


class _Link(asyncio.Protocol):
    def __init__(self, owner: FilingProcess) -> None:
        self._owner = owner
        self._frames = _Frames()
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio's classes, only alike.
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            self._owner._received(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(self)


class FilingProcess:
    """Starts, feeds, watches and stops the filing process of one gateway.

    ``open_evidence`` is called in that process to make its evidence
    service (it loads the evidence key itself, from a file or an HSM): a
    module-level function or a partial of one, as it crosses to a spawned
    interpreter. ``publish`` gets the events of the filings' commits, on
    the gateway's event loop; ``on_erased`` the SHA-256 of bytes the
    process erased (a draft a filing superseded).
    """

    def __init__(
        self,
        url: str,
        blob_dir: Path,
        *,
        open_evidence: Callable[[], EvidenceService],
        publish: Callable[[list[MailboxEvent]], None],
        on_erased: Callable[[str], None],
        max_batch: int = 256,
    ) -> None:
        self._url = url
        self._blob_dir = blob_dir
        self._open_evidence = open_evidence
        self._publish = publish
        self._on_erased = on_erased
        self._max_batch = max_batch
        # spawn: the gateway has threads (writer, fsync) a fork would copy mid-flight.
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._link: _Link | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tickets = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[FiledMessage]] = {}
        self._outgoing: list[bytes] = []
        self._stopping = False
        self._restart_after = _RESTART_FIRST
        self._restart: asyncio.TimerHandle | None = None
        # Its batches and filings, over every start (metrics).
        self.batches = 0
        self.jobs = 0
        self.restarts = 0

    @property
    def running(self) -> bool:
        return self._link is not None

    async def start(self) -> None:
        """Spawn the process and connect to it, on the gateway's event loop."""
        self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        process = self._context.Process(
            target=_child,
            args=(self._url, str(self._blob_dir), self._max_batch, self._open_evidence, theirs),
            name="palais-filing",
            # Not a daemon: it starts its own sealing process. It ends when
            # its socket does, the gateway's end closed or the gateway gone.
            daemon=False,
        )
        # The spawn writes the interpreter's preparation data: off the loop.
        await asyncio.to_thread(process.start)
        theirs.close()
        link = _Link(self)
        await self._loop.create_unix_connection(lambda: link, sock=ours)
        self._process, self._link = process, link
        log.info("filing process started (pid %s)", process.pid)

    async def file(self, filing: Filing) -> FiledMessage | None:
        """Carry out a filing there; None if the process is not running (the
        caller files it itself)."""
        link = self._link
        if link is None or link.transport is None or self._loop is None:
            return None
        ticket = next(self._tickets)
        waiting: asyncio.Future[FiledMessage] = self._loop.create_future()
        self._waiting[ticket] = waiting
        # Its record writers are the process's own (its receipts' evidence service).
        self._outgoing.append(_frame((ticket, dataclasses.replace(filing, writers={}))))
        if len(self._outgoing) == 1:
            # The filings this turn of the loop makes go in one write (one
            # system call, one wake-up of the process), sent before the
            # loop next waits for the network.
            self._loop.call_soon(self._send)
        return await waiting

    def _send(self) -> None:
        # Empty if the process ended meanwhile (_lost answered those filings).
        frames, self._outgoing = self._outgoing, []
        link = self._link
        if frames and link is not None and link.transport is not None:
            link.transport.write(b"".join(frames))

    def _received(self, message: tuple[Any, ...]) -> None:
        """A batch committed there: its events first, then its outcomes."""
        events, erased, answers = message
        self.batches += 1
        self.jobs += len(answers)
        self._restart_after = _RESTART_FIRST
        try:
            if events:
                self._publish(events)
            for sha in erased:
                self._on_erased(sha)
        finally:  # a listener's failure leaves no client waiting
            for ticket, ok, value in answers:
                waiting = self._waiting.pop(ticket, None)
                if waiting is None or waiting.done():
                    continue  # its client went away; the filing stands
                if ok:
                    waiting.set_result(value)
                else:
                    waiting.set_exception(
                        value if value is not None else restarting("a filing failed there")
                    )

    def _lost(self, link: _Link) -> None:
        if self._link is link:
            self._link = None
        # What it had not answered may or may not be on disk: the client is
        # told to send again (the resend is recognised by its Message-ID).
        left, self._waiting = self._waiting, {}
        self._outgoing.clear()
        for waiting in left.values():
            if not waiting.done():
                waiting.set_exception(restarting("filing process ended"))
        if self._stopping or self._loop is None:
            return
        exitcode = self._process.exitcode if self._process is not None else None
        log.warning(
            "the filing process ended (exit %s); the gateway's writer files meanwhile,"
            " starting it again in %.1f s",
            exitcode,
            self._restart_after,
        )
        delay, self._restart_after = (
            self._restart_after,
            min(self._restart_after * 2, _RESTART_CAP),
        )
        self._restart = self._loop.call_later(delay, self._start_again)

    def _start_again(self) -> None:
        self._restart = None
        if self._stopping or self._loop is None:
            return
        if self._process is not None:
            self._process.join(timeout=0)
        self.restarts += 1
        task = self._loop.create_task(self.start())
        task.add_done_callback(self._started_again)

    def _started_again(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("the filing process could not be started", exc_info=task.exception())
        if not self._stopping and self._loop is not None:
            self._restart = self._loop.call_later(self._restart_after, self._start_again)

    async def stop(self, timeout: float = 60.0) -> None:
        """Let the process commit and answer what it was sent, then end."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        self._send()
        link, process = self._link, self._process
        if link is not None and link.transport is not None:
            # Its reading ends; what it was sent is still filed and answered.
            link.transport.write_eof()
        if process is None:
            return
        await asyncio.to_thread(process.join, timeout)
        if process.is_alive():
            log.error("the filing process did not end in %.0f s; killed", timeout)
            process.kill()
            await asyncio.to_thread(process.join, 5)


def _portable(error: BaseException) -> BaseException | None:
    """The error itself if it crosses to the gateway intact, else None (a
    451 there; the error is logged here). Tried as it crosses: in a frame."""
    try:
        _Frames().feed(_frame(error))
    except Exception:
        log.error("a filing failed", exc_info=error)
        return None
    return error


def _child(
    url: str,
    blob_dir: str,
    max_batch: int,
    open_evidence: Callable[[], EvidenceService],
    sock: socket.socket,
) -> None:
    # The gateway's signals are the gateway's: it stops its listeners, then
    # closes this process's socket, which ends it once all it was sent is
    # filed (an interrupt here would lose a batch in flight).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _serve(url, Path(blob_dir), max_batch, open_evidence, sock)


def _serve(
    url: str,
    blob_dir: Path,
    max_batch: int,
    open_evidence: Callable[[], EvidenceService],
    sock: socket.socket,
) -> None:
    """One thread reads the filings, commits them a batch at a time and
    answers each batch in one frame: what arrives during a batch waits in
    the socket for the next, and no second thread takes turns at this
    interpreter's lock with the writer's."""
    from palais.mailbox.evidence import ReceiptOrder
    from palais.storage.blobs import BlobStore
    from palais.storage.engine import make_engine, write_lock
    from palais.storage.evidence import ReceiptWriter, receipts_finisher, tree_head_finisher
    from palais.storage.placement import RecordWriters

    evidence = open_evidence()
    engine = make_engine(url, writer=True)
    # Its own segments (another node name): two processes never append to one file.
    blobs = BlobStore(blob_dir)
    commits = CommitQueue(
        engine, blobs, lambda _events: None, max_batch=max_batch, lock=write_lock(url)
    )
    commits.finishers += [receipts_finisher(evidence), tree_head_finisher(evidence)]
    erased: list[str] = []
    commits.on_erased.append(erased.append)
    writers: RecordWriters = {ReceiptOrder: ReceiptWriter(evidence)}
    frames = _Frames()
    waiting: deque[tuple[int, Filing]] = deque()
    reading = True
    sock.setblocking(True)

    def receive(flags: int) -> bool:
        """What has come; False once the gateway's end is closed."""
        try:
            data = sock.recv(1 << 20, flags)
        except BlockingIOError:
            return True
        except OSError:  # reset: the gateway is gone
            return False
        if not data:
            return False
        waiting.extend(frames.feed(data))
        return True

    try:
        while True:
            if reading and not waiting:
                reading = receive(0)  # nothing to do: wait for a filing
            while reading:  # and take every one that came meanwhile
                before = len(waiting)
                reading = receive(socket.MSG_DONTWAIT)
                if len(waiting) == before:
                    break
            if not waiting:
                if not reading:
                    break
                continue
            batch = [waiting.popleft() for _ in range(min(max_batch, len(waiting)))]
            jobs = [dataclasses.replace(filing, writers=writers) for _, filing in batch]
            outcomes, events = commits.commit_batch([(job, [job.data]) for job in jobs])
            answers = [
                (ticket, ok, value if ok else _portable(value))
                for (ticket, _), (ok, value) in zip(batch, outcomes, strict=True)
            ]
            gone = erased[:]
            erased.clear()
            try:
                sock.sendall(_frame((events, gone, answers)))
            except OSError:
                reading = False  # the gateway is gone; what is committed stands
    finally:
        commits.stop()
        evidence.close()
        blobs.close()
        engine.dispose()
        sock.close()
