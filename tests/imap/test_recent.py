"""\\Recent as IMAP4rev1 requires it (RFC 3501 2.3.2, 6.3.1, 7.3.2): a message is
recent in exactly one session, the first told of it; EXAMINE sees without
claiming; STATUS RECENT counts; the claim outlives the session in the store."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.imap.conftest import Pki, RawClient, ServerThread
from tests.imap.fake_store import FakeStore

MSG = b"From: a@b.test\r\nSubject: nouveau\r\n\r\ncorps\r\n"


@pytest.fixture
def fresh(store: FakeStore) -> FakeStore:
    store.seen_elsewhere = False  # deliveries nobody was told of yet
    return store


def _client(server: ServerThread, pki: Pki) -> RawClient:
    client = RawClient(server.port, pki.client_context())
    client.login()
    return client


@pytest.fixture
def two(server: ServerThread, pki: Pki) -> Iterator[tuple[RawClient, RawClient]]:
    a, b = _client(server, pki), _client(server, pki)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_recent_in_exactly_one_session(
    server: ServerThread, fresh: FakeStore, two: tuple[RawClient, RawClient]
) -> None:
    for _ in range(3):
        server.run(fresh.deliver, "INBOX", MSG)
    a, b = two
    # EXAMINE sees the recent messages and claims none of them.
    peek = b.cmd(b"e", b"EXAMINE INBOX")
    assert b"* 3 RECENT\r\n" in peek
    assert b.cmd(b"u", b"UNSELECT")[-1].startswith(b"u OK")
    selected = a.cmd(b"s", b"SELECT INBOX")
    assert b"* 3 RECENT\r\n" in selected
    flags = a.cmd(b"f", b"FETCH 1:3 (FLAGS)")
    assert flags[:3] == [b"* %d FETCH (FLAGS (\\Recent))\r\n" % n for n in (1, 2, 3)]
    # The second session selecting the box is not the first one told of them.
    again = b.cmd(b"s", b"SELECT INBOX")
    assert b"* 0 RECENT\r\n" in again
    assert b.cmd(b"f", b"FETCH 1 (FLAGS)")[0] == b"* 1 FETCH (FLAGS ())\r\n"
    # \Recent is shown by STORE's FETCH too.
    stored = a.cmd(b"t", b"STORE 1 +FLAGS (\\Flagged)")
    assert stored[0] == b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
    # STATUS RECENT: the messages recent here, for this session; none for the other.
    assert b"(RECENT 3)" in a.cmd(b"st", b"STATUS INBOX (RECENT)")[0]
    assert b"(RECENT 0)" in b.cmd(b"st", b"STATUS INBOX (RECENT)")[0]


def test_arrivals_are_recent_in_the_first_session_told(
    server: ServerThread, fresh: FakeStore, two: tuple[RawClient, RawClient]
) -> None:
    server.run(fresh.deliver, "INBOX", MSG)
    a, b = two
    assert b"* 1 RECENT\r\n" in a.cmd(b"s", b"SELECT INBOX")
    assert b"* 0 RECENT\r\n" in b.cmd(b"s", b"SELECT INBOX")
    # Delivered while both have the box selected: the first to announce it claims it.
    server.run(fresh.deliver, "INBOX", MSG)
    assert a.cmd(b"n", b"NOOP")[:2] == [b"* 2 EXISTS\r\n", b"* 2 RECENT\r\n"]
    assert b.cmd(b"n", b"NOOP")[:2] == [b"* 2 EXISTS\r\n", b"* 0 RECENT\r\n"]
    assert a.cmd(b"f", b"FETCH 2 (FLAGS)")[0] == b"* 2 FETCH (FLAGS (\\Recent))\r\n"
    # Leaving the box stores the claim, for every later session (and restart).
    a.cmd(b"u", b"UNSELECT")
    box = fresh.boxes["INBOX"]
    for _ in range(50):
        if fresh.recent_marks.get(box.id) == 2:
            break
        time.sleep(0.02)
    assert fresh.recent_marks[box.id] == 2
    assert b"* 0 RECENT\r\n" in a.cmd(b"s", b"SELECT INBOX")


def test_status_recent_of_a_box_not_selected(
    server: ServerThread, fresh: FakeStore, raw: RawClient
) -> None:
    server.run(fresh.deliver, "Brouillons", MSG)
    server.run(fresh.deliver, "Brouillons", MSG)
    raw.login()
    assert raw.cmd(b"a", b"STATUS Brouillons (MESSAGES RECENT)")[0] == (
        b'* STATUS "Brouillons" (MESSAGES 2 RECENT 2)\r\n'
    )
    lines = raw.cmd(b"b", b'LIST "" Brouillons RETURN (STATUS (RECENT))')
    assert lines[1] == b'* STATUS "Brouillons" (RECENT 2)\r\n'
