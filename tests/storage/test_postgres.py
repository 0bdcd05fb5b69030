"""The mail store on a real PostgreSQL server (the production database).

Every test of test_mailstore.py runs on PostgreSQL too; these add what is
PostgreSQL's own: the migrations against the models, timestamps read back
in the server's time zone (Europe/Paris in the test cluster), and bulk import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from palais.mailbox.boxes import BoxKind
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import summarize
from palais.mailbox.routing import Destination, FilingPlan
from palais.storage import Storage, open_storage, schema
from palais.storage.bulk import import_messages
from palais.storage.migrate import alembic_config
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.test_mailstore import (
    DOSSIER_ADDRESS,
    GREFFE,
    ME,
    NUMBER,
    OTHER,
    msg,
    setup_directory,
)

CLERK = Identity(3, "clerk@x.test", Role.GREFFIER, "C", "d" * 64, GREFFE)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _open(url: str, blob_dir: Path) -> Storage:
    """Storage with the directory set up and the writer not yet started."""
    st = open_storage(url, blob_dir)
    try:
        st.commits.run_now(setup_directory)
    except BaseException:
        st.close()
        raise
    return st


@pytest.fixture
def storage(postgres_url: str, tmp_path: Path) -> Iterator[Storage]:
    st = _open(postgres_url, tmp_path / "blobs")
    st.start()
    try:
        yield st
    finally:
        st.close()


def _scalar(st: Storage, sql: str) -> Any:
    with st.reader.connect() as conn:
        return conn.execute(text(sql)).scalar()


def _file(st: Storage, n: int, plan: FilingPlan, body: str = "") -> None:
    data = msg(n, body)
    run(st.mail.file(ME, data, summarize(data), plan))


def _send(st: Storage, n: int, body: str = "") -> None:
    """ME sends to the greffe in the dossier: a sent copy and a received one."""
    plan = FilingPlan(
        NUMBER,
        (
            Destination(ME.address, BoxKind.ENVOYES, frozenset({"\\Seen"})),
            Destination(GREFFE, BoxKind.RECUS),
        ),
    )
    _file(st, n, plan, body)


# -- schema ------------------------------------------------------------------------


def test_migrations_apply_and_match_the_models(postgres_url: str, tmp_path: Path) -> None:
    st = open_storage(postgres_url, tmp_path / "blobs")
    try:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert _scalar(st, "SELECT version_num FROM alembic_version") == head
        tables = set(inspect(st.reader).get_table_names())
        assert set(schema.Base.metadata.tables) <= tables
        with st.reader.connect() as conn:
            # What autogenerate would write next: nothing, or the models and
            # the migrations disagree on PostgreSQL.
            assert compare_metadata(MigrationContext.configure(conn), schema.Base.metadata) == []
    finally:
        st.close()
    # Starting again on a migrated database changes nothing.
    again = open_storage(postgres_url, tmp_path / "blobs")
    try:
        assert _scalar(again, "SELECT count(*) FROM alembic_version") == 1
    finally:
        again.close()


# -- filing and reading --------------------------------------------------------------


def test_filed_message_reads_back_in_both_views(storage: Storage) -> None:
    before = datetime.now(UTC)
    _send(storage, 1)
    header = msg(1)[: msg(1).index(b"\r\n\r\n") + 4]

    async def go() -> None:
        mail = storage.mail
        views = [
            (ME, "Envoyés", frozenset({"\\Seen"})),
            (ME, f"Dossiers/{NUMBER}/Envoyés", frozenset({"\\Seen"})),
            (CLERK, "INBOX", frozenset()),
            (CLERK, f"Dossiers/{NUMBER}/Reçus", frozenset()),
        ]
        blobs = set()
        for who, name, flags in views:
            box = await mail.mailbox(who, name)
            assert (box.messages, box.unseen, box.uidnext) == (1, 0 if flags else 1, 2), name
            assert [(e.uid, e.flags) for e in await mail.entries(who, box.id)] == [(1, flags)]
            (rec,) = await mail.records(who, box.id, [1, 2])
            assert (rec.uid, rec.flags, rec.size) == (1, flags, len(msg(1)))
            assert rec.internaldate.utcoffset() == timedelta(0)  # as on SQLite
            assert before - timedelta(seconds=1) <= rec.internaldate <= datetime.now(UTC)
            assert await mail.read(rec.blob) == msg(1)
            assert await mail.read_header(rec.blob, rec.header_size) == header
            blobs.add(rec.blob)
        assert len(blobs) == 1  # one message, stored once
        # OTHER takes part in the dossier but was not an addressee.
        assert len(await mail.entries(OTHER, (await mail.mailbox(OTHER, "INBOX")).id)) == 0

    run(go())
    assert _scalar(storage, "SELECT count(*) FROM message") == 1
    assert _scalar(storage, "SELECT refcount FROM blob") == 1


def test_append_draft_keeps_its_date_and_joins_its_dossier(storage: Storage) -> None:
    # A zone other than UTC: the timestamptz column must give back the same instant.
    when = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=timezone(timedelta(hours=2)))
    draft = (
        f"From: a@x.test\r\nTo: {DOSSIER_ADDRESS}\r\nSubject: brouillon\r\n"
        "Message-ID: <draft@x>\r\n\r\ntexte\r\n"
    ).encode()

    async def go() -> None:
        mail = storage.mail
        res = await mail.append(ME, "Brouillons", draft, frozenset({"\\Flagged"}), when)
        box = await mail.mailbox(ME, "Brouillons")
        assert (res.uid, res.uidvalidity) == (1, box.uidvalidity)
        (rec,) = await mail.records(ME, box.id, [res.uid])
        assert rec.internaldate == when and rec.internaldate.utcoffset() == timedelta(0)
        assert rec.flags == frozenset({"\\Flagged"})
        assert await mail.read(rec.blob) == draft
        # Addressed to the dossier: it shows in the dossier's drafts too.
        in_dossier = await mail.mailbox(ME, f"Dossiers/{NUMBER}/Brouillons")
        assert in_dossier.messages == 1
        (twin,) = await mail.records(ME, in_dossier.id, [1])
        assert twin.blob == rec.blob and twin.internaldate == when

    run(go())


def test_bulk_import(postgres_url: str, tmp_path: Path) -> None:
    count = 300
    st = _open(postgres_url, tmp_path / "blobs")
    try:
        # Writer stopped: the import runs in this thread, in several batches.
        imported = import_messages(
            st,
            owner=OTHER.address,
            kind=BoxKind.RECUS,
            dossier=NUMBER,
            messages=(msg(n) for n in range(count)),
            sender=ME.address,
            batch_size=128,
        )
        assert imported == count
        st.start()

        async def go() -> None:
            for name in ("INBOX", f"Dossiers/{NUMBER}/Reçus"):
                box = await st.mail.mailbox(OTHER, name)
                assert (box.messages, box.unseen) == (count, count), name
                table = await st.mail.entries(OTHER, box.id)
                assert list(table.uids) == list(range(1, count + 1)), name
            inbox = await st.mail.mailbox(OTHER, "INBOX")
            recs = await st.mail.records(OTHER, inbox.id, [1, 150, count])
            assert [await st.mail.read(r.blob) for r in recs] == [msg(0), msg(149), msg(count - 1)]

        run(go())
        assert _scalar(st, "SELECT count(*) FROM message") == count
        assert _scalar(st, "SELECT count(*) FROM placement") == count
    finally:
        st.close()
