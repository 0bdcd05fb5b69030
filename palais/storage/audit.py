"""The append-only audit log: operators' changes and the gateway's refusals.

Three ways in and one way out:

- ``record`` writes one event in the caller's transaction, so that a change
  and its audit event commit (or roll back) together;
- ``AuditLog.refused`` is the front-ends' port (``RefusalAudit``): called on
  the event loop for every refused connection or command, it only queues the
  event; a task writes the queue in batches through the writer, so a flood of
  refusals costs one transaction per batch and never stalls a session;
- ``query`` reads events back, oldest first, for ``palais admin audit`` and
  its JSON-lines export.

Nothing here updates or deletes an event.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, or_, select

from palais.mailbox.audit import GATEWAY_ACTOR, AuditAction, AuditRecord
from palais.storage import schema
from palais.storage.sql import utc
from palais.storage.writer import CommitQueue, WriteContext

__all__ = ["AuditLog", "query", "record"]

AE = schema.table(schema.AuditEvent)
log = logging.getLogger("palais.storage.audit")

# Column sizes of the table (migration 0005): a peer's or a subject's text
# comes from the network; it is cut rather than failing the whole batch.
_LIMITS = {"actor": 320, "subject": 320, "listener": 32, "peer": 80}


def _row(
    *,
    at: datetime,
    actor: str,
    action: AuditAction | str,
    subject: str | None,
    listener: str | None,
    peer: str | None,
    reason: str | None,
    detail: Mapping[str, object] | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        # SQLAlchemy keeps SQLite datetimes as naive text: always UTC, so
        # that text order is time order and ``since`` compares correctly.
        "at": at.astimezone(UTC),
        "actor": actor,
        # An unknown action is a programming error: the vocabulary is closed.
        "action": AuditAction(action).value,
        "subject": subject,
        "listener": listener,
        "peer": peer,
        "reason": reason,
        "detail": json.dumps(dict(detail or {}), sort_keys=True, ensure_ascii=False),
    }
    for column, limit in _LIMITS.items():
        value = row[column]
        if value is not None and len(value) > limit:
            row[column] = value[:limit]
    return row


def record(
    conn: Connection,
    *,
    actor: str,
    action: AuditAction | str,
    subject: str | None = None,
    listener: str | None = None,
    peer: str | None = None,
    reason: str | None = None,
    detail: Mapping[str, object] | None = None,
) -> None:
    """Write one event in ``conn``'s transaction (it commits with the change it records).

    ``detail`` must be JSON-serialisable; ``action`` one of ``AuditAction``.
    """
    conn.execute(
        insert(AE).values(
            _row(
                at=datetime.now(UTC),
                actor=actor,
                action=action,
                subject=subject,
                listener=listener,
                peer=peer,
                reason=reason,
                detail=detail,
            )
        )
    )


def query(
    engine: Engine,
    *,
    since: datetime | None = None,
    account: str | None = None,
    action: AuditAction | str | None = None,
    limit: int | None = None,
) -> Iterator[AuditRecord]:
    """Events oldest first; ``account`` matches the subject or the actor.

    A naive ``since`` is taken as UTC. Rows are streamed: an export of the
    whole log does not hold it in memory.
    """
    stmt = select(AE).order_by(AE.c.at, AE.c.id)
    if since is not None:
        stmt = stmt.where(AE.c.at >= utc(since))
    if account is not None:
        who = account.strip().lower()
        stmt = stmt.where(or_(AE.c.subject == who, AE.c.actor == who))
    if action is not None:
        stmt = stmt.where(AE.c.action == AuditAction(action).value)
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=500).execute(stmt)
        for row in result:
            yield AuditRecord(
                id=int(row.id),
                at=utc(row.at),
                actor=row.actor,
                action=AuditAction(row.action),
                subject=row.subject,
                listener=row.listener,
                peer=row.peer,
                reason=row.reason,
                detail=json.loads(row.detail) if row.detail else {},
            )


class AuditLog:
    """The gateway's refusals, queued on the event loop and written in batches.

    Bounded: past ``capacity`` queued events (the database is down, or a
    flood outruns the writer) new ones are dropped and counted, and the
    count is logged, rather than the gateway's memory growing without end.
    """

    CAPACITY = 10_000
    BATCH = 1_000

    def __init__(
        self,
        commits: CommitQueue,
        *,
        capacity: int = CAPACITY,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._commits = commits
        self._capacity = capacity
        self._clock = clock
        self._pending: deque[dict[str, Any]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self._dropped_reported = 0

    def refused(
        self,
        action: AuditAction,
        *,
        listener: str,
        peer: str | None,
        reason: str,
        subject: str | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Queue one refusal; returns at once (``RefusalAudit``)."""
        if len(self._pending) >= self._capacity:
            self.dropped += 1
            if self.dropped == self._dropped_reported + 1:
                # Once per episode here; the drain reports the total.
                log.warning("audit queue full, dropping refusal events capacity=%d", self._capacity)
            return
        self._pending.append(
            _row(
                at=self._clock(),
                # The gateway refused; whom it refused (when known) is the subject.
                actor=GATEWAY_ACTOR,
                action=action,
                subject=subject,
                listener=listener,
                peer=peer,
                reason=reason,
                detail=detail,
            )
        )
        self._wake()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _wake(self) -> None:
        if self._task is not None and not self._task.done():
            return  # the running drain takes this event with its next batch
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test, shutdown): written by the next wake or by close()
        self._task = loop.create_task(self._drain(), name="palais-audit")

    async def _drain(self) -> None:
        # Events that arrive while a batch commits make up the next batch.
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(self.BATCH, len(self._pending)))]
            try:
                await self._commits.submit(functools.partial(_insert, batch))
            except Exception:  # the writer stopped, the database refused: counted, not raised
                self.dropped += len(batch)
                log.exception("audit events could not be written count=%d", len(batch))
            else:
                self.written += len(batch)
            self._report_drops()

    def _report_drops(self) -> None:
        if self.dropped > self._dropped_reported:
            log.warning(
                "audit events dropped count=%d total=%d",
                self.dropped - self._dropped_reported,
                self.dropped,
            )
            self._dropped_reported = self.dropped

    async def close(self) -> None:
        """Write what is queued; call before the writer stops."""
        if self._task is not None:
            await self._task
        if self._pending:
            await self._drain()
        self._report_drops()


def _insert(rows: list[dict[str, Any]], conn: Connection, _ctx: WriteContext) -> None:
    conn.execute(insert(AE), rows)
