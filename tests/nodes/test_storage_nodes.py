"""Two storage nodes on one PostgreSQL: bytes, UIDs and mailbox events shared through it.

Each node is what ``palais serve`` opens (``open_storage(..., node=...)``):
its own writer, caches and listening connection. Nothing passes between
them but the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url

from palais.mailbox.model import EventKind, FlagMode, MailboxEvent
from palais.storage import Storage, open_storage
from palais.storage.engine import _PING_AFTER_IDLE
from palais.storage.pg_notify import decode, encode
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.test_mailstore import ME, msg, setup_directory

# Bound on every wait for an event from the other node: a correctness
# bound (it must come), generous on a busy machine, not a speed claim.
WAIT = 20.0


@contextmanager
def nodes(url: str, tmp_path: Path, count: int = 2) -> Iterator[list[Storage]]:
    opened: list[Storage] = []
    try:
        for i in range(count):
            st = open_storage(url, tmp_path / f"blobs{i}", node=f"n{i}")
            if i == 0:
                st.commits.run_now(setup_directory)
            st.start()
            opened.append(st)
        yield opened
    finally:
        for st in opened:
            st.close()


def _listen(storages: list[Storage]) -> None:
    loop = asyncio.get_running_loop()
    for st in storages:
        assert st.notifications is not None
        st.notifications.start(loop)


async def _connected(st: Storage) -> None:
    assert st.notifications is not None
    async with asyncio.timeout(WAIT):
        while not st.notifications.connected:
            await asyncio.sleep(0.02)


class Heard:
    """The events one subscription heard, and a way to wait for one."""

    def __init__(self) -> None:
        self.events: list[MailboxEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: MailboxEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def until(self, kind: EventKind, uid: int) -> MailboxEvent:
        async with asyncio.timeout(WAIT):
            while True:
                for ev in self.events:
                    if ev.kind is kind and ev.uid == uid:
                        return ev
                self._changed.clear()
                await self._changed.wait()


def _count_large_objects(url: str) -> int:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
        assert row is not None
        return int(row[0])


def test_payloads_stay_under_the_limit_and_round_trip() -> None:
    events = [
        MailboxEvent(7, EventKind.FLAGS_CHANGED, uid, frozenset({"\\Seen", f"$k{uid}"}), uid + 1)
        for uid in range(1, 3000)
    ]
    payloads = encode("node-a", events, "b1")
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    assert len(set(payloads)) == len(payloads)
    back = [ev for p in payloads for ev in decode(p)[1]]
    assert back == events
    assert decode(payloads[0])[0] == "node-a"


def test_a_message_taken_in_on_one_node_is_read_and_pushed_on_the_other(
    postgres_url: str, tmp_path: Path
) -> None:
    with nodes(postgres_url, tmp_path) as (a, b):

        async def go() -> None:
            _listen([a, b])
            await _connected(b)
            box_b = await b.mail.mailbox(ME, "Brouillons")
            heard = Heard()
            b.mail.subscribe(box_b.id, heard)
            res = await a.mail.append(ME, "Brouillons", msg(1), frozenset(), None)
            arrived = await heard.until(EventKind.ARRIVED, res.uid)
            assert arrived.mailbox_id == box_b.id
            # The bytes are in the database: node b reads what node a took in.
            (rec,) = await b.mail.records(ME, box_b.id, [res.uid])
            assert await b.mail.read(rec.blob) == msg(1)
            assert (await b.mail.read_header(rec.blob, rec.header_size)).endswith(b"\r\n\r\n")
            # Flags written on a reach b's session; so does the expunge.
            await a.mail.store_flags(
                ME, box_b.id, [res.uid], FlagMode.ADD, frozenset({"\\Deleted"})
            )
            changed = await heard.until(EventKind.FLAGS_CHANGED, res.uid)
            assert "\\Deleted" in changed.flags
            objects = _count_large_objects(postgres_url)
            assert await a.mail.expunge(ME, box_b.id) == [res.uid]
            await heard.until(EventKind.REMOVED, res.uid)
            # Nobody holds the message any more: its large object is unlinked.
            assert _count_large_objects(postgres_url) == objects - 1

        asyncio.run(go())


def test_uids_from_two_nodes_at_once_are_distinct_dense_and_heard_in_order(
    postgres_url: str, tmp_path: Path
) -> None:
    per_node = 40
    with nodes(postgres_url, tmp_path, count=3) as (a, b, watcher):

        async def go() -> None:
            _listen([a, b, watcher])
            await _connected(watcher)
            box = await watcher.mail.mailbox(ME, "Brouillons")
            heard = Heard()
            watcher.mail.subscribe(box.id, heard)

            async def append(st: Storage, n: int) -> int:
                return (await st.mail.append(ME, "Brouillons", msg(n), frozenset(), None)).uid

            uids = await asyncio.gather(
                *(append(a, n) for n in range(per_node)),
                *(append(b, 1000 + n) for n in range(per_node)),
            )
            assert sorted(uids) == list(range(1, 2 * per_node + 1))
            await heard.until(EventKind.ARRIVED, 2 * per_node)
            arrived = [ev.uid for ev in heard.events if ev.kind is EventKind.ARRIVED]
            # Commit order is UID order per box: a session never hears a
            # smaller UID after a bigger one (it could not announce it).
            assert arrived == sorted(arrived) == list(range(1, 2 * per_node + 1))
            info = await watcher.mail.mailbox(ME, "Brouillons")
            assert (info.messages, info.uidnext) == (2 * per_node, 2 * per_node + 1)

        asyncio.run(go())


def test_a_lost_notification_connection_reconnects_and_resyncs(
    postgres_url: str, tmp_path: Path
) -> None:
    with nodes(postgres_url, tmp_path) as (a, b):

        async def go() -> None:
            _listen([a, b])
            await _connected(b)
            box = await b.mail.mailbox(ME, "Brouillons")
            heard = Heard()
            b.mail.subscribe(box.id, heard)
            first = await a.mail.append(ME, "Brouillons", msg(1), frozenset(), None)
            await heard.until(EventKind.ARRIVED, first.uid)
            assert b.notifications is not None
            async with asyncio.timeout(WAIT):
                while not b.notifications.knows(box.id):
                    await asyncio.sleep(0.02)
            # The server drops node b's listening connection (a restart, a
            # proxy's idle cut); changes made meanwhile must still reach b.
            dsn = make_url(postgres_url).set(drivername="postgresql")
            with psycopg.connect(dsn.render_as_string(hide_password=False)) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'palais-listen n1'"
                )
            second = await a.mail.append(ME, "Brouillons", msg(2), frozenset(), None)
            await a.mail.store_flags(ME, box.id, [first.uid], FlagMode.ADD, frozenset({"\\Seen"}))
            await heard.until(EventKind.ARRIVED, second.uid)
            seen = await heard.until(EventKind.FLAGS_CHANGED, first.uid)
            assert "\\Seen" in seen.flags
            async with asyncio.timeout(WAIT):
                while b.notifications.resyncs < 1:
                    await asyncio.sleep(0.05)
            assert b.notifications.connected

        asyncio.run(go())


@pytest.mark.parametrize("erase_first", [False, True])
def test_bytes_of_a_message_are_in_the_database(
    postgres_url: str, tmp_path: Path, erase_first: bool
) -> None:
    """No file under the node's blob directory: another machine reads them."""
    with nodes(postgres_url, tmp_path, count=1) as (a,):

        async def go() -> None:
            res = await a.mail.append(ME, "Brouillons", msg(5, "x" * 5000), frozenset(), None)
            box = await a.mail.mailbox(ME, "Brouillons")
            (rec,) = await a.mail.records(ME, box.id, [res.uid])
            if erase_first:
                await a.mail.store_flags(
                    ME, box.id, [res.uid], FlagMode.ADD, frozenset({"\\Deleted"})
                )
                await a.mail.expunge(ME, box.id)
                assert await a.mail.records(ME, box.id, [res.uid]) == []
            else:
                assert await a.mail.read(rec.blob) == msg(5, "x" * 5000)

        asyncio.run(go())
        blob_dir = tmp_path / "blobs0"
        assert not blob_dir.exists() or not any(blob_dir.iterdir())


def test_a_change_made_by_a_command_reaches_the_nodes(postgres_url: str, tmp_path: Path) -> None:
    """A store opened without a node id (palais admin, a migration script)
    still notifies: the nodes' sessions hear what it changed."""
    with nodes(postgres_url, tmp_path, count=1) as (node,):
        command = open_storage(postgres_url, tmp_path / "command")
        command.start()
        try:
            assert command.notifications is None  # it listens to nobody

            async def go() -> None:
                _listen([node])
                await _connected(node)
                box = await node.mail.mailbox(ME, "Brouillons")
                heard = Heard()
                node.mail.subscribe(box.id, heard)
                res = await command.mail.append(ME, "Brouillons", msg(9), frozenset(), None)
                await heard.until(EventKind.ARRIVED, res.uid)

            asyncio.run(go())
        finally:
            command.close()


def test_connections_cut_by_the_server_while_idle_are_replaced(
    postgres_url: str, tmp_path: Path
) -> None:
    """A restart of PostgreSQL (or a proxy's idle cut) kills the pooled
    connections: the next filing still goes through, on new ones. Pooled
    connections are tried before use once idle for a second (not at every
    checkout: the writer takes two a batch)."""
    with nodes(postgres_url, tmp_path, count=1) as (a,):

        async def go() -> None:
            first = await a.mail.append(ME, "Brouillons", msg(1), frozenset(), None)
            dsn = make_url(postgres_url).set(drivername="postgresql")
            with psycopg.connect(dsn.render_as_string(hide_password=False)) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
            assert killed is not None and killed[0] >= 2  # the writer's and the blobs'
            await asyncio.sleep(_PING_AFTER_IDLE + 0.2)
            second = await a.mail.append(ME, "Brouillons", msg(2), frozenset(), None)
            assert second.uid > first.uid
            box = await a.mail.mailbox(ME, "Brouillons")
            (rec,) = await a.mail.records(ME, box.id, [second.uid])
            assert await a.mail.read(rec.blob) == msg(2)

        asyncio.run(go())
