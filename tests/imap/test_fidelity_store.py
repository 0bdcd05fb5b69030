"""SEARCH on the real store over a real socket (issue "Protocol fidelity"):
SENT* keys on the Date header's own day, address keys on group names; and
the migration that gives existing rows their sent day."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from alembic import command
from sqlalchemy import Connection, create_engine

from palais.mailbox.identity import Identity, Role
from palais.storage import Storage, open_storage
from palais.storage.directory import Directory
from palais.storage.migrate import alembic_config, head_revision, upgrade
from palais.storage.writer import WriteContext
from tests.imap.conftest import ADDRESS, Pki, RawClient, ServerThread
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.conftest import DATABASES, database_url

ME = Identity(1, ADDRESS, Role.AVOCAT, "Maître Test", "f" * 64, ADDRESS)


def _message(n: int, date: str, to: str = "x@y.test", cc: str = "") -> bytes:
    extra = f"Cc: {cc}\r\n" if cc else ""
    return (
        f"From: a@b.test\r\nTo: {to}\r\n{extra}Subject: m{n}\r\nDate: {date}\r\n\r\nbody\r\n"
    ).encode()


MESSAGES = [
    _message(1, "25 Mar 2007 00:00 +0200"),  # 24 March in UTC
    _message(2, "Sat, 24 Mar 2007 23:30:00 -0500"),  # 25 March in UTC
    _message(3, "Sun, 25 Mar 2007 12:00:00 +0000"),
    _message(4, "Mon, 26 Mar 2007 00:30:00 +0100", to="Equipe Greffe: g@x.test, h@x.test;"),
    _message(5, "no date at all", cc="group:;, group2: (foo) ;"),
]


@pytest.fixture(params=DATABASES)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    st = open_storage(database_url(request, tmp_path), tmp_path / "blobs")

    def setup(conn: Connection, _ctx: WriteContext) -> None:
        Directory.add_account(conn, address=ADDRESS, role=Role.AVOCAT, display_name="M")

    st.commits.run_now(setup)
    st.start()
    try:
        yield st
    finally:
        st.close()


@pytest.fixture
def drafts(storage: Storage, pki: Pki) -> Iterator[RawClient]:
    """Logged in to a server on the real store, Brouillons selected (UIDs 1..5)."""

    async def fill() -> None:
        for data in MESSAGES:
            await storage.mail.append(ME, "Brouillons", data, frozenset(), None)

    asyncio.run(fill())
    server = ServerThread(cast(Any, storage.mail), pki, idle_timeout=30).start()
    try:
        with RawClient(server.port, pki.client_context()) as client:
            client.login()
            assert client.cmd(b"s", b"SELECT Brouillons")[-1].startswith(b"s OK")
            yield client
    finally:
        server.stop()


def _search(client: RawClient, query: bytes) -> bytes:
    lines = client.cmd(b"q", b"UID SEARCH " + query)
    assert lines[-1].startswith(b"q OK"), lines
    return lines[0].rstrip(b"\r\n")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"SENTON 25-Mar-2007", b"* SEARCH 1 3"),
        (b"SENTON 24-Mar-2007", b"* SEARCH 2"),
        (b"SENTBEFORE 25-Mar-2007", b"* SEARCH 2"),
        (b"SENTSINCE 25-Mar-2007", b"* SEARCH 1 3 4"),
        (b"SENTSINCE 26-Mar-2007", b"* SEARCH 4"),
        (b"SENTBEFORE 26-Mar-2007 SENTSINCE 25-Mar-2007", b"* SEARCH 1 3"),
    ],
)
def test_sent_keys_use_the_date_headers_own_day(
    drafts: RawClient, query: bytes, expected: bytes
) -> None:
    assert _search(drafts, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b'TO "Equipe Greffe"', b"* SEARCH 4"),
        (b"TO g@x.test", b"* SEARCH 4"),
        (b"CC group2", b"* SEARCH 5"),
        (b"CC foo", b"* SEARCH"),
        (b"TO x@y.test", b"* SEARCH 1 2 3 5"),
    ],
)
def test_address_keys_match_group_names(drafts: RawClient, query: bytes, expected: bytes) -> None:
    assert _search(drafts, query) == expected


def test_migration_gives_existing_rows_the_day_they_were_searched_on(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    try:
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")
        with sqlite3.connect(path) as db:
            db.execute(
                'INSERT INTO blob (sha256, segment, "offset", length, refcount)'
                " VALUES ('b', 's', 0, 1, 1)"
            )
            for n, sent in ((1, "2007-03-24 22:00:00.000000"), (2, None)):
                db.execute(
                    "INSERT INTO message (id, blob, size, header_size, internaldate, sent_date,"
                    " subject, from_addr, to_addr, cc_addr, bcc_addr, sender,"
                    " sender_fingerprint) VALUES (?, 'b', 1, 1, '2026-01-01 00:00:00.000000',"
                    " ?, '', '', '', '', '', 'a@b.test', 'f')",
                    (n, sent),
                )
        assert upgrade(engine) == ("0002", head_revision())
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT id, sent_day FROM message ORDER BY id").fetchall()
        assert rows == [(1, "2007-03-24"), (2, None)]
    finally:
        engine.dispose()
