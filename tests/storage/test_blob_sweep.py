"""The sweep of large objects no blob row names, on a real PostgreSQL server.

An object left by a rolled-back batch is remembered by a first pass and
unlinked by a pass a grace period later; one named by a blob row, or named
between the passes (a batch committing its rows), is never unlinked; one
node sweeps at a time; and ``palais admin sweep-blobs`` does the same pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert, text

from palais.cli import main
from palais.storage import Storage, migrate_database, open_storage, schema
from palais.storage.blob_sweep import BlobSweeper, SweepCounts, sweep
from palais.storage.blobs import sha256_hex
from palais.storage.pg_blobs import PG_SEGMENT, PgBlobStore
from palais.storage.writer import WriteContext
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)

HOUR = timedelta(hours=1)
BL = schema.table(schema.Blob)


@pytest.fixture
def storage(postgres_url: str, tmp_path: Path) -> Iterator[Storage]:
    st = open_storage(postgres_url, tmp_path / "blobs")  # the writer not started: run_now
    try:
        yield st
    finally:
        st.close()


def _engine(st: Storage) -> Engine:
    return st.writer_engine


def _orphans(st: Storage, *datas: bytes) -> list[int]:
    """Large objects of a batch whose rows were rolled back (the job refused)."""
    store = st.blobs
    assert isinstance(store, PgBlobStore)
    written: list[int] = []

    def refused(conn: Connection, ctx: WriteContext) -> None:
        written.extend(where.offset for where in ctx.locations.values())
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        st.commits.run_now(refused, list(datas))
    assert len(written) == len(datas)
    return written


def _name(st: Storage, oid: int, sha: str, segment: str = PG_SEGMENT) -> None:
    """A blob row naming ``oid`` (what a batch's commit writes)."""
    with st.writer_engine.begin() as conn:
        conn.execute(
            insert(BL).values(sha256=sha, segment=segment, offset=oid, length=1, refcount=1)
        )


def _exists(st: Storage, oid: int) -> bool:
    with st.reader.connect() as conn:
        found = conn.execute(
            text("SELECT count(*) FROM pg_largeobject_metadata WHERE oid = CAST(:o AS oid)"),
            {"o": oid},
        ).scalar_one()
    return bool(found)


def _remembered(st: Storage) -> dict[int, Any]:
    with st.reader.connect() as conn:
        rows = conn.execute(text("SELECT lo_oid, lo_xmin, seen_at FROM blob_orphan")).all()
    return {int(r.lo_oid): r for r in rows}


def _db_now(st: Storage) -> datetime:
    with st.reader.connect() as conn:
        now: datetime = conn.execute(text("SELECT now()")).scalar_one()
    return now


def test_an_orphan_is_remembered_then_unlinked_after_the_grace(storage: Storage) -> None:
    (oid,) = _orphans(storage, b"rolled back")
    assert _exists(storage, oid)

    first = sweep(_engine(storage), grace=HOUR)
    assert (first.ran, first.found, first.remembered, first.unlinked) == (True, 1, 1, 0)
    assert list(_remembered(storage)) == [oid]
    # Seen again within the grace: still there, not remembered anew.
    again = sweep(_engine(storage), grace=HOUR)
    assert (again.remembered, again.unlinked, again.waiting) == (0, 0, 1)
    assert _exists(storage, oid)

    later = sweep(_engine(storage), grace=HOUR, now=_db_now(storage) + HOUR)
    assert (later.found, later.unlinked, later.waiting) == (1, 1, 0)
    assert not _exists(storage, oid)
    assert _remembered(storage) == {}
    # Nothing left: the next pass finds nothing.
    assert sweep(_engine(storage), grace=HOUR).found == 0


def test_a_named_object_is_never_touched(storage: Storage) -> None:
    store = storage.blobs
    assert isinstance(store, PgBlobStore)
    where = store.append(b"kept")
    store.sync()
    _name(storage, where.offset, "a" * 64)
    for hours in (0, 2, 4):
        outcome = sweep(_engine(storage), grace=HOUR, now=_db_now(storage) + hours * HOUR)
        assert (outcome.found, outcome.remembered, outcome.unlinked) == (0, 0, 0)
    assert _exists(storage, where.offset)
    assert store.read(where, sha256_hex(b"kept")) == b"kept"


def test_only_a_row_of_the_large_object_segment_names_an_oid(storage: Storage) -> None:
    # A pack segment's offset (bytes from an older layout) equal to an OID names nothing.
    (oid,) = _orphans(storage, b"x")
    _name(storage, oid, "b" * 64, segment="0001")
    sweep(_engine(storage), grace=HOUR)
    assert sweep(_engine(storage), grace=HOUR, now=_db_now(storage) + HOUR).unlinked == 1
    assert not _exists(storage, oid)


def test_an_object_named_between_the_passes_is_kept(storage: Storage) -> None:
    # The moment in every filing: the bytes committed, the rows not yet.
    (oid,) = _orphans(storage, b"in flight")
    assert sweep(_engine(storage), grace=HOUR).remembered == 1
    _name(storage, oid, "c" * 64)  # the batch commits its rows
    later = sweep(_engine(storage), grace=HOUR, now=_db_now(storage) + 2 * HOUR)
    assert (later.found, later.unlinked) == (0, 0)
    assert _exists(storage, oid)
    assert _remembered(storage) == {}  # forgotten: named now


def test_an_oid_given_to_another_object_is_seen_anew(storage: Storage) -> None:
    # An OID unlinked and handed out again is another object (its metadata
    # row's xmin): its grace starts at its own first sight.
    (oid,) = _orphans(storage, b"new object, old OID")
    sweep(_engine(storage), grace=HOUR)
    with storage.writer_engine.begin() as conn:
        conn.execute(text("UPDATE blob_orphan SET lo_xmin = '1' WHERE lo_oid = :o"), {"o": oid})
    now = _db_now(storage) + 2 * HOUR
    outcome = sweep(_engine(storage), grace=HOUR, now=now)
    assert (outcome.remembered, outcome.unlinked) == (1, 0)
    assert _exists(storage, oid)
    assert _remembered(storage)[oid].seen_at == now
    assert sweep(_engine(storage), grace=HOUR, now=now + HOUR).unlinked == 1


def test_an_object_erased_meanwhile_is_forgotten(storage: Storage) -> None:
    (oid,) = _orphans(storage, b"erased")
    sweep(_engine(storage), grace=HOUR)
    with storage.writer_engine.begin() as conn:
        conn.execute(text("SELECT lo_unlink(CAST(:o AS oid))"), {"o": oid})
    outcome = sweep(_engine(storage), grace=HOUR, now=_db_now(storage) + HOUR)
    assert (outcome.found, outcome.unlinked) == (0, 0)
    assert _remembered(storage) == {}


def test_one_node_sweeps_at_a_time(storage: Storage) -> None:
    (oid,) = _orphans(storage, b"o")
    with storage.reader.connect() as other:  # another node, in the middle of its pass
        other.execute(text("SELECT pg_advisory_lock(hashtextextended('palais blob sweep', 0))"))
        try:
            busy = sweep(_engine(storage), grace=HOUR)
        finally:
            other.execute(
                text("SELECT pg_advisory_unlock(hashtextextended('palais blob sweep', 0))")
            )
            other.commit()
    assert (busy.ran, busy.remembered) == (False, 0)
    assert _remembered(storage) == {}
    assert sweep(_engine(storage), grace=HOUR).remembered == 1
    assert _exists(storage, oid)


def test_a_backlog_goes_over_several_passes(storage: Storage) -> None:
    oids = _orphans(storage, b"1", b"2", b"3")
    sweep(_engine(storage), grace=HOUR)
    now = _db_now(storage) + HOUR
    first = sweep(_engine(storage), grace=HOUR, now=now, limit=2)
    assert (first.unlinked, first.more) == (2, True)
    second = sweep(_engine(storage), grace=HOUR, now=now, limit=2)
    assert (second.unlinked, second.more) == (1, False)
    assert not any(_exists(storage, oid) for oid in oids)


def test_the_gateway_sweeper_counts_what_it_unlinks(storage: Storage) -> None:
    (oid,) = _orphans(storage, b"periodic")
    sweeper = BlobSweeper(_engine(storage), grace=timedelta(0), interval=3600)

    async def two_looks() -> None:
        assert await sweeper.look() is False  # remembered
        assert await sweeper.look() is False  # a grace of 0 later: unlinked

    asyncio.run(two_looks())
    assert sweeper.unlinked == 1
    assert not _exists(storage, oid)
    (family,) = SweepCounts(sweeper).collect()
    assert family.name == "palais_blob_sweep_unlinked"
    assert family.samples[0].value == 1


# -- palais admin sweep-blobs -------------------------------------------------------


def _instance(root: Path, url: str) -> Path:
    root.mkdir()
    (root / "palais.toml").write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    return root


def _admin(root: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(["admin", "sweep-blobs", *args, "-d", str(root)])
        except SystemExit as exit:  # argparse's usage errors
            status = int(exit.code or 0)
    return status, out.getvalue(), err.getvalue()


def test_admin_sweep_blobs(storage: Storage, postgres_url: str, tmp_path: Path) -> None:
    (oid,) = _orphans(storage, b"for the operator")
    store = storage.blobs
    assert isinstance(store, PgBlobStore)
    named = store.append(b"named")
    store.sync()
    _name(storage, named.offset, "d" * 64)
    root = _instance(tmp_path / "instance", postgres_url)

    status, out, err = _admin(root, "--json")
    assert (status, err) == (0, "")
    assert json.loads(out) == {
        "ran": True,
        "found": 1,
        "remembered": 1,
        "unlinked": 0,
        "waiting": 1,
        "grace_seconds": 3600.0,
    }
    status, out, err = _admin(root)
    assert status == 0
    assert out == (
        "large objects named by no blob row: 1 found, 0 newly remembered, 0 unlinked,"
        " 1 waiting for their grace of 3600 s\n"
    )
    assert _exists(storage, oid)

    # No gateway running: the operator may say the grace is over.
    status, out, _ = _admin(root, "--grace", "0", "--json")
    assert status == 0
    assert json.loads(out)["unlinked"] == 1
    assert not _exists(storage, oid)
    assert _exists(storage, named.offset)

    assert _admin(root, "--grace", "soon")[0] == 2


def test_admin_sweep_blobs_refuses_while_another_node_sweeps(
    storage: Storage, postgres_url: str, tmp_path: Path
) -> None:
    root = _instance(tmp_path / "instance", postgres_url)
    with storage.reader.connect() as other:
        other.execute(text("SELECT pg_advisory_lock(hashtextextended('palais blob sweep', 0))"))
        try:
            status, _, err = _admin(root)
        finally:
            other.execute(
                text("SELECT pg_advisory_unlock(hashtextextended('palais blob sweep', 0))")
            )
            other.commit()
    assert status == 1
    assert "another node is sweeping" in err


def test_admin_sweep_blobs_on_sqlite(tmp_path: Path) -> None:
    root = _instance(tmp_path / "instance", "sqlite:///palais.db")
    migrate_database(f"sqlite:///{root / 'palais.db'}")
    status, out, err = _admin(root)
    assert (status, out) == (1, "")
    assert "SQLite" in err
