"""Persistence: SQL index, content-addressed message bytes, group commit.

One idea per module: ``engine`` (connections), ``schema`` and ``migrate``
(tables), ``sql`` (shared SQL building blocks), ``reads`` (boxes, entries,
records, searches), ``caches`` (entry tables kept by box key), ``messages``
(message rows and their bytes), ``placement`` (carrying the domain's plans
out: placements, UIDs, MODSEQs, records), ``mailstore`` (``MailAccess``:
facts, planner, carrier, in one writer transaction), ``writer`` (group
commit), ``blobs`` and ``hub`` (the ``MessageBytes`` and ``EventBus``
ports), ``directory``, ``bulk`` (imports). Rules live in ``palais.mailbox``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from palais.mailbox.enrolment import EnrolmentPolicy
from palais.mailbox.ports import EventBus, EvidenceService, MessageBytes
from palais.storage.blobs import BlobStore
from palais.storage.directory import Directory
from palais.storage.engine import is_sqlite, make_engine, write_lock
from palais.storage.hub import EventHub
from palais.storage.mailstore import MailStore
from palais.storage.migrate import SchemaMismatch, check_revision, upgrade
from palais.storage.pg_notify import ClusterBus
from palais.storage.writer import CommitQueue

__all__ = ["SchemaMismatch", "Storage", "migrate_database", "open_storage"]


@dataclass
class Storage:
    reader: Engine
    writer_engine: Engine
    blobs: MessageBytes
    hub: EventHub
    commits: CommitQueue
    mail: MailStore
    directory: Directory
    # Several nodes on one PostgreSQL: mailbox changes heard from the database.
    notifications: ClusterBus | None = None

    def start(self) -> None:
        self.commits.start()

    def close(self) -> None:
        """Commit whatever is queued, then release files and connections."""
        self.commits.stop()
        if self.notifications is not None:
            self.notifications.stop()
        self.mail.close()
        if self.mail.receipts is not None:
            self.mail.receipts.service.close()  # after the writer: its last receipts
        self.blobs.close()
        self.reader.dispose()
        self.writer_engine.dispose()


def migrate_database(url: str) -> tuple[str | None, str]:
    """Apply the shipped migrations; (revision before, revision after)."""
    engine = make_engine(url, writer=True)
    try:
        return upgrade(engine)
    finally:
        engine.dispose()


def open_storage(
    url: str,
    blob_dir: Path,
    *,
    max_batch: int = 256,
    migrate: bool = True,
    evidence: EvidenceService | None = None,
    enrolment: EnrolmentPolicy = EnrolmentPolicy.REGISTER,
    node: str | None = None,
) -> Storage:
    """Open the stores. ``migrate`` upgrades the schema first (init, tests);
    without it a schema at another revision raises SchemaMismatch (serve).
    ``node`` (PostgreSQL only): this process is one node of several sharing
    the database; mailbox changes then travel through LISTEN/NOTIFY
    (``Storage.notifications``, started by the gateway on its loop)."""
    writer_engine = make_engine(url, writer=True)
    try:
        if migrate:
            upgrade(writer_engine)
        else:
            check_revision(writer_engine)
    except BaseException:
        writer_engine.dispose()
        raise
    reader = make_engine(url, writer=False)
    blobs: MessageBytes
    if is_sqlite(url):
        blobs = BlobStore(blob_dir)
    else:
        # Several nodes share one PostgreSQL: the bytes live there too, so
        # that any node reads what another took in (palais.storage.pg_blobs).
        from palais.storage.pg_blobs import PgBlobStore

        blobs = PgBlobStore(writer_engine, reader, legacy=blob_dir)
    hub = EventHub()
    bus: EventBus = hub
    cluster: ClusterBus | None = None
    notifier: ClusterBus | None = None
    if not is_sqlite(url):
        # Every writer on PostgreSQL notifies, a gateway node's as well as a
        # command's (palais admin moving a dossier's messages): the nodes'
        # IDLE sessions hear it. Only a node listens (``node``).
        notifier = ClusterBus(hub, url, node or "command")
        if node is not None:
            bus = cluster = notifier
    # Nothing is indexed here: the messages listed in text_pending (filed
    # during a burst, or stored before the substring index) are the
    # gateway's indexing process's (palais.storage.indexing), and a search
    # reads them meanwhile. Indexing a backlog here delayed every start of
    # a node (and every `palais admin` command) by minutes after a burst.
    commits = CommitQueue(
        writer_engine, blobs, bus.publish, max_batch=max_batch, lock=write_lock(url)
    )
    mail = MailStore(reader, commits, blobs, bus, evidence=evidence)
    if notifier is not None:
        # Last: the events of what the other finishers file (receipt mails) too.
        commits.finishers.append(notifier.notify)
    return Storage(
        reader=reader,
        writer_engine=writer_engine,
        blobs=blobs,
        hub=hub,
        commits=commits,
        mail=mail,
        directory=Directory(reader, commits, enrolment=enrolment),
        notifications=cluster,
    )
