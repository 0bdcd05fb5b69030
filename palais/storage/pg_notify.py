"""Mailbox changes across nodes: PostgreSQL LISTEN/NOTIFY behind the ``EventBus`` port.

Several nodes on one database each hold IMAP sessions idling on boxes that
any node may change. The writer's transaction itself notifies (a finisher
of the batch runs ``pg_notify``), so a change is announced exactly when it
commits, never for a rolled-back attempt, and PostgreSQL hands the
notifications to every listener in commit order.

Every node, the one that made the change included, delivers the events it
*hears* to its sessions, from one listening connection: one stream in
commit order. Delivering a node's own events directly (sooner) would let a
session see UID 7 committed here before UID 6 committed a moment earlier on
another node, and the view would never announce 6. The price is one local
round trip of PostgreSQL for a node's own events; the session that made a
change reports it itself, as on SQLite.

When the listening connection is lost, the node reconnects with backoff and
then resynchronises the boxes its sessions watch from the rows (entries
changed since the last modseq heard, UIDs gone since): what was said while
nobody listened is not lost, only late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, make_url

from palais.mailbox.model import EventKind, MailboxEvent
from palais.storage.hub import EventHub
from palais.storage.rows import rows_for
from palais.storage.writer import WriteContext

__all__ = ["CHANNEL", "ClusterBus", "decode", "encode"]

CHANNEL = "palais_mailbox"
# PostgreSQL refuses payloads of 8000 bytes or more; a margin of half, as
# the limit met 7,900-byte payloads of a batch of 200 filings.
_PAYLOAD_LIMIT = 3900
_KINDS = {EventKind.ARRIVED: "a", EventKind.FLAGS_CHANGED: "f", EventKind.REMOVED: "r"}
_KIND_OF = {v: k for k, v in _KINDS.items()}
# How long the listener waits for a notification before checking it is still connected.
_QUIET_CHECK = 5.0
# How often the listener looks up the state of boxes newly watched (what a
# resync after an outage starts from).
_POLL = 0.25
_BACKOFF_FIRST = 0.2
_BACKOFF_MAX = 10.0
# UIDs gone during an outage are found by difference; past this many, the
# sessions are told of the first ones only (they see the rest at their next SELECT).
_RESYNC_REMOVED_LIMIT = 100_000

log = logging.getLogger("palais.storage.pg_notify")


def encode(node: str, events: Sequence[MailboxEvent], batch: str) -> list[str]:
    """Payloads of at most ``_PAYLOAD_LIMIT`` bytes (distinct: PostgreSQL folds equal ones)."""
    out: list[str] = []
    part: list[list[Any]] = []
    size = 0
    for ev in events:
        item: list[Any] = [ev.mailbox_id, _KINDS[ev.kind], ev.uid, ev.modseq, " ".join(ev.flags)]
        cost = len(json.dumps(item, ensure_ascii=True)) + 1
        if part and size + cost > _PAYLOAD_LIMIT - 200:
            out.append(_payload(node, batch, len(out), part))
            part, size = [], 0
        part.append(item)
        size += cost
    if part:
        out.append(_payload(node, batch, len(out), part))
    return out


def _payload(node: str, batch: str, index: int, items: list[list[Any]]) -> str:
    return json.dumps({"n": node, "b": f"{batch}.{index}", "e": items}, ensure_ascii=True)


def decode(payload: str) -> tuple[str, list[MailboxEvent]]:
    """(the node that made the change, its events); ValueError if malformed."""
    doc = json.loads(payload)
    events = [
        MailboxEvent(
            int(box),
            _KIND_OF[kind],
            int(uid),
            frozenset(flags.split()) if flags else frozenset(),
            int(modseq),
        )
        for box, kind, uid, modseq, flags in doc["e"]
    ]
    return str(doc["n"]), events


@dataclass
class _Baseline:
    """What this node last knew of a watched box: what a resync starts from."""

    modseq: int
    uidnext: int


class ClusterBus:
    """``palais.mailbox.ports.EventBus`` for one node of several on one PostgreSQL."""

    def __init__(self, hub: EventHub, url: str, node: str) -> None:
        self.hub = hub
        self.node = node
        self._dsn = _libpq_url(url)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._watched: Counter[int] = Counter()  # box -> subscribed sessions
        self._baselines: dict[int, _Baseline] = {}
        self._batches = 0
        self.connected = False
        self.last_error: str | None = None
        self.reconnects = 0
        self.received = 0
        self.resyncs = 0

    # -- the port -------------------------------------------------------------

    def subscribe(
        self, mailbox_id: int, listener: Callable[[MailboxEvent], None]
    ) -> Callable[[], None]:
        with self._lock:
            self._watched[mailbox_id] += 1
        unsubscribe = self.hub.subscribe(mailbox_id, listener)
        done = False

        def forget() -> None:
            nonlocal done
            unsubscribe()
            if done:
                return
            done = True
            with self._lock:
                self._watched[mailbox_id] -= 1
                if self._watched[mailbox_id] <= 0:
                    del self._watched[mailbox_id]

        return forget

    def publish(self, events: list[MailboxEvent]) -> None:
        """The writer's call after a commit: nothing to do, the commit notified."""

    # -- the writer's side ------------------------------------------------------

    def notify(self, conn: Connection, contexts: Sequence[WriteContext]) -> None:
        """The batch's finisher: its events as notifications, sent when it commits."""
        events = [ev for ctx in contexts for ev in ctx.events]
        if not events:
            return
        self._batches += 1
        batch = f"{time.time_ns():x}.{self._batches}"
        rows_for(conn).run(
            "SELECT pg_notify(?, p) FROM unnest(?::text[]) AS p",
            (CHANNEL, encode(self.node, events, batch)),
        )

    # -- the listener -------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="palais-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_QUIET_CHECK + 5)
            self._thread = None

    def knows(self, mailbox_id: int) -> bool:
        """Whether the state of a watched box is known (a resync would start from it)."""
        with self._lock:
            return mailbox_id in self._baselines

    def health(self) -> dict[str, object]:
        return {
            "connected": self.connected,
            "reconnects": self.reconnects,
            "received": self.received,
            "resyncs": self.resyncs,
            "last_error": self.last_error,
        }

    def _run(self) -> None:
        import psycopg

        delay = _BACKOFF_FIRST
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._dsn,
                    autocommit=True,
                    connect_timeout=10,
                    # A peer gone silent (no RST) is noticed within seconds.
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                    application_name=f"palais-listen {self.node}"[:63],
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected = True
                    self.last_error = None
                    # Listening from here on: what committed before is in the rows.
                    if not first:
                        self.resyncs += 1
                        log.info("notifications back; resynchronising the watched boxes")
                        self._resync(conn, everything=True)
                    first = False
                    delay = _BACKOFF_FIRST
                    self._listen(conn)
            except Exception as error:  # connection lost or refused: back off and try again
                if self.connected or self.last_error is None:
                    log.warning("notification connection lost: %s", error)
                self.connected = False
                self.last_error = type(error).__name__
                if not first:
                    self.reconnects += 1
                first = False
                self._stop.wait(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
        self.connected = False

    def _listen(self, conn: Any) -> None:
        quiet_since = time.monotonic()
        while not self._stop.is_set():
            self._resync(conn, everything=False)  # baselines of newly watched boxes
            got = False
            for note in conn.notifies(timeout=_POLL, stop_after=256):
                got = True
                self.received += 1
                try:
                    node, events = decode(note.payload)
                except (ValueError, KeyError, TypeError):
                    log.warning("malformed notification ignored")
                    continue
                del node  # every node's events, this one's included, come this way
                self._learn(events)
                self._deliver(events)
            now = time.monotonic()
            if got:
                quiet_since = now
            elif now - quiet_since > _QUIET_CHECK:
                conn.execute("SELECT 1")  # raises if the server went away
                quiet_since = now

    def _learn(self, events: Sequence[MailboxEvent]) -> None:
        with self._lock:
            for ev in events:
                base = self._baselines.get(ev.mailbox_id)
                if base is None:
                    continue
                base.modseq = max(base.modseq, ev.modseq)
                if ev.kind is EventKind.ARRIVED:
                    base.uidnext = max(base.uidnext, ev.uid + 1)

    def _deliver(self, events: list[MailboxEvent]) -> None:
        if events and self._loop is not None:
            # RuntimeError: the loop closed, the node is stopping.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.hub.publish, events)

    def _resync(self, conn: Any, *, everything: bool) -> None:
        """Baselines for newly watched boxes; with ``everything``, what changed
        in watched boxes since their baseline, as events."""
        with self._lock:
            watched = sorted(self._watched)
            for gone in set(self._baselines) - set(watched):
                del self._baselines[gone]
            fresh = [b for b in watched if b not in self._baselines]
            known = {b: self._baselines[b] for b in watched if b in self._baselines}
        if everything:
            # Watched so shortly before the outage that its state was not
            # looked up: every entry is said (views ignore what they show).
            known.update({b: _Baseline(0, 1) for b in fresh})
        if fresh:
            rows = conn.execute(
                "SELECT id, highestmodseq, uidnext FROM mailbox WHERE id = ANY(%s)", (fresh,)
            ).fetchall()
            with self._lock:
                for box, modseq, uidnext in rows:
                    self._baselines.setdefault(int(box), _Baseline(int(modseq), int(uidnext)))
        if not everything:
            return
        for box, base in known.items():
            events = _changes_since(conn, box, base)
            if events:
                self._learn(events)
                self._deliver(events)


def _changes_since(conn: Any, box: int, base: _Baseline) -> list[MailboxEvent]:
    """A watched box's changes since ``base`` as the events that would have said them."""
    out: list[MailboxEvent] = []
    for uid, flags, modseq in conn.execute(
        "SELECT uid, flags, modseq FROM entry WHERE mailbox_id = %s AND modseq > %s ORDER BY uid",
        (box, base.modseq),
    ):
        kind = EventKind.ARRIVED if uid >= base.uidnext else EventKind.FLAGS_CHANGED
        out.append(
            MailboxEvent(
                box, kind, int(uid), frozenset(flags.split()) if flags else frozenset(), int(modseq)
            )
        )
    row = conn.execute("SELECT highestmodseq FROM mailbox WHERE id = %s", (box,)).fetchone()
    if row is not None and int(row[0]) > base.modseq:
        # Something left the box (or changed) since: UIDs below the baseline's
        # uidnext that no entry holds any more are said gone; a view ignores
        # those it never showed.
        present = {
            int(u)
            for (u,) in conn.execute(
                "SELECT uid FROM entry WHERE mailbox_id = %s AND uid < %s", (box, base.uidnext)
            )
        }
        gone = [u for u in range(1, base.uidnext) if u not in present]
        top = int(row[0])
        out += [
            MailboxEvent(box, EventKind.REMOVED, u, modseq=top)
            for u in gone[:_RESYNC_REMOVED_LIMIT]
        ]
    return out


def _libpq_url(url: str) -> str:
    """The database URL as libpq spells it (without SQLAlchemy's driver suffix)."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)
