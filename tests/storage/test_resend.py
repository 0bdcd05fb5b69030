"""Resend detection in the filing transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from palais.mailbox.boxes import BoxKind
from palais.mailbox.completion import arrival_digest
from palais.mailbox.drafts import supersedes_drafts
from palais.mailbox.message import summarize
from palais.mailbox.routing import Destination, FilingPlan
from palais.storage import Storage, open_storage
from palais.storage.mailstore import FiledMessage
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.test_mailstore import GREFFE, ME, NUMBER, OTHER, msg, setup_directory

PLAN = FilingPlan(
    NUMBER,
    (
        Destination(ME.address, BoxKind.ENVOYES, frozenset({"\\Seen"})),
        Destination(GREFFE, BoxKind.RECUS),
    ),
)


@pytest.fixture
def store(storage: Storage) -> Storage:
    return storage


def _file(st: Storage, data: bytes, since: datetime | None, who=ME, plan=PLAN) -> FiledMessage:  # type: ignore[no-untyped-def]
    return asyncio.run(st.mail.file(who, data, summarize(data), plan, resend_since=since))


def _count(st: Storage, sql: str) -> int:
    with st.reader.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def _hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


def test_same_message_again_files_nothing(store: Storage) -> None:
    first = _file(store, msg(1), _hour_ago())
    again = _file(store, msg(1), _hour_ago())
    assert not first.resent and again.resent
    assert again.message_id == first.message_id and again.sha256 == first.sha256
    assert _count(store, "SELECT count(*) FROM message") == 1
    assert _count(store, "SELECT count(*) FROM entry") == 4  # two placements, two views each


def _completed(n: int, by: str) -> bytes:
    """Message ``n`` as node ``by`` completes it: its own trace line first."""
    return f"Received: from client by {by}; now\r\n".encode() + msg(n)


def test_the_same_submission_completed_by_another_node_is_a_resend(store: Storage) -> None:
    arrival = arrival_digest(ME.address, msg(1))

    def file(data: bytes, arrival: str | None) -> FiledMessage:
        return asyncio.run(
            store.mail.file(
                ME, data, summarize(data), PLAN, resend_since=_hour_ago(), arrival=arrival
            )
        )

    first = file(_completed(1, "node1"), arrival)
    again = file(_completed(1, "node2"), arrival)
    assert again.resent and (again.message_id, again.sha256) == (first.message_id, first.sha256)
    assert again.size == first.size
    # What the client sent differs (or was not told): another message.
    other = file(_completed(1, "node2"), arrival_digest(ME.address, msg(1, body="changed")))
    untold = file(_completed(1, "node3"), None)
    assert not other.resent and not untold.resent
    assert _count(store, "SELECT count(*) FROM message") == 3


def test_not_a_resend(store: Storage) -> None:
    first = _file(store, msg(1), _hour_ago())
    # Other bytes under the same Message-ID, another sender, or outside the window.
    other_bytes = _file(store, msg(1, body="changed"), _hour_ago())
    other_sender = _file(store, msg(1), _hour_ago(), who=OTHER)
    too_late = _file(store, msg(1), datetime.now(UTC) + timedelta(seconds=1))
    unchecked = _file(store, msg(1), None)
    ids = {f.message_id for f in (first, other_bytes, other_sender, too_late, unchecked)}
    assert len(ids) == 5
    assert not any(f.resent for f in (other_bytes, other_sender, too_late, unchecked))


def test_the_same_message_to_other_recipients_is_filed_for_them(store: Storage) -> None:
    """After "452 Too many recipients" a client sends the same bytes to the rest."""
    rest = FilingPlan(
        NUMBER,
        (
            Destination(ME.address, BoxKind.ENVOYES, frozenset({"\\Seen"})),
            Destination(OTHER.address, BoxKind.RECUS),
        ),
    )

    def file(plan: FilingPlan) -> FiledMessage:
        data = msg(1)
        return asyncio.run(
            store.mail.file(ME, data, summarize(data), plan, resend_since=_hour_ago())
        )

    first = file(PLAN)
    second = file(rest)
    assert not second.resent and second.message_id != first.message_id

    async def inbox() -> int:
        return (await store.mail.mailbox(OTHER, "INBOX")).messages

    assert asyncio.run(inbox()) == 1
    # Each of them sent again is a resend of its own first filing.
    assert (file(rest).message_id, file(PLAN).message_id) == (second.message_id, first.message_id)


def test_a_draft_with_the_same_bytes_is_not_a_filing(store: Storage) -> None:
    async def draft() -> None:
        await store.mail.append(ME, "Brouillons", msg(1), frozenset(), None)

    asyncio.run(draft())
    superseding = replace(PLAN, supersedes=supersedes_drafts(ME.mailbox_owner, "<1@x>"))
    sent = _file(store, msg(1), _hour_ago(), plan=superseding)
    assert not sent.resent
    assert sent.uids  # filed in the boxes of the plan

    async def drafts() -> int:
        return (await store.mail.mailbox(ME, "Brouillons")).messages

    assert asyncio.run(drafts()) == 0  # the sent draft left Brouillons


def test_identical_submissions_in_flight_file_one_message(store: Storage) -> None:
    async def go() -> list[FiledMessage]:
        since = _hour_ago()
        return await asyncio.gather(
            *(
                store.mail.file(ME, msg(n % 5), summarize(msg(n % 5)), PLAN, resend_since=since)
                for n in range(40)
            )
        )

    results = asyncio.run(go())
    assert _count(store, "SELECT count(*) FROM message") == 5
    assert sum(not r.resent for r in results) == 5
    by_sha: dict[str, set[int]] = {}
    for r in results:
        by_sha.setdefault(r.sha256, set()).add(r.message_id)
    assert all(len(ids) == 1 for ids in by_sha.values())


def test_two_nodes_file_one_message(postgres_url: str, tmp_path: Path) -> None:
    """Two gateways on one PostgreSQL database: a twin in flight on each files once."""
    nodes = []
    for i in range(2):
        node = open_storage(postgres_url, tmp_path / f"blobs{i}")
        if i == 0:
            node.commits.run_now(setup_directory)
        node.start()
        nodes.append(node)
    try:

        async def go() -> list[FiledMessage]:
            since = _hour_ago()
            # Each node completes the copy it gets with its own trace line.
            return await asyncio.gather(
                *(
                    node.mail.file(
                        ME,
                        _completed(n, f"node{i}"),
                        summarize(_completed(n, f"node{i}")),
                        PLAN,
                        resend_since=since,
                        arrival=arrival_digest(ME.address, msg(n)),
                    )
                    for n in range(30)
                    for i, node in enumerate(nodes)
                )
            )

        results = asyncio.run(go())
        assert _count(nodes[0], "SELECT count(*) FROM message") == 30
        assert sum(r.resent for r in results) == 30
        by_id = {r.message_id: r.sha256 for r in results if not r.resent}
        assert all(by_id[r.message_id] == r.sha256 for r in results if r.resent)
    finally:
        for node in nodes:
            node.close()
