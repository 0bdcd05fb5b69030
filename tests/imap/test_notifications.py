"""Two sessions on one box: changes by one reach the other, when the protocol allows."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest

from tests.imap.conftest import Pki, RawClient, ServerThread
from tests.imap.fake_store import FakeStore

MSG = b"From: a@b.test\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
def pair(server: ServerThread, store: FakeStore, pki: Pki) -> Iterator[tuple[RawClient, RawClient]]:
    for _ in range(3):
        server.run(store.deliver, "INBOX", MSG)
    with (
        RawClient(server.port, pki.client_context()) as one,
        RawClient(server.port, pki.client_context()) as two,
    ):
        for client in (one, two):
            client.login()
            client.cmd(b"s", b"SELECT INBOX")
        yield one, two


def idle(client: RawClient) -> None:
    client.send(b"i IDLE\r\n")
    assert client.read_response() == b"+ idling\r\n"


def done(client: RawClient) -> list[bytes]:
    client.send(b"DONE\r\n")
    return client.until_tagged(b"i")


def test_expunge_reaches_idling_session_within_a_second(pair: tuple[RawClient, RawClient]) -> None:
    one, two = pair
    idle(two)
    one.cmd(b"a", b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    started = time.monotonic()
    assert one.cmd(b"b", b"EXPUNGE")[0] == b"* 2 EXPUNGE\r\n"
    two.sock.settimeout(1.0)
    pushed = [two.read_response()]
    if pushed[0].startswith(b"* 2 FETCH"):
        # The flag change may be pushed first, or coalesced into the expunge.
        pushed.append(two.read_response())
    assert time.monotonic() - started < 1.0
    assert pushed[-1] == b"* 2 EXPUNGE\r\n"
    assert done(two) == [b"i OK IDLE terminated\r\n"]
    assert two.cmd(b"c", b"SEARCH ALL")[0] == b"* SEARCH 1 2\r\n"


def test_new_message_and_flags_are_pushed_while_idle(
    pair: tuple[RawClient, RawClient], server: ServerThread, store: FakeStore
) -> None:
    one, two = pair
    idle(two)
    one.cmd(b"a", b"STORE 1 +FLAGS (\\Seen)")
    assert two.read_response() == b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
    server.run(store.deliver, "INBOX", MSG)
    assert two.read_response() == b"* 4 EXISTS\r\n"
    # \Recent in the first session told of it: "two", idling ("one" is not).
    assert two.read_response() == b"* 1 RECENT\r\n"
    assert done(two) == [b"i OK IDLE terminated\r\n"]


def test_flag_change_seen_by_other_session_at_next_command(
    pair: tuple[RawClient, RawClient],
) -> None:
    one, two = pair
    assert one.cmd(b"a", b"STORE 3 +FLAGS (\\Flagged)") == [
        b"* 3 FETCH (FLAGS (\\Flagged))\r\n",
        b"a OK STORE completed\r\n",
    ]
    # The session that made the change does not hear it twice.
    assert one.cmd(b"b", b"NOOP") == [b"b OK NOOP completed\r\n"]
    assert two.cmd(b"c", b"NOOP") == [
        b"* 3 FETCH (UID 3 FLAGS (\\Flagged))\r\n",
        b"c OK NOOP completed\r\n",
    ]


def test_expunge_is_deferred_during_fetch_store_search(pair: tuple[RawClient, RawClient]) -> None:
    one, two = pair
    one.cmd(b"a", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    one.cmd(b"b", b"EXPUNGE")
    fetched = two.cmd(b"c", b"FETCH 1:* (UID)")
    assert b"EXPUNGE" not in b"".join(fetched)
    assert fetched[-1] == b"c OK FETCH completed\r\n"
    assert len(fetched) == 3  # message 1 is gone from the store: 2 and 3 answer
    searched = two.cmd(b"d", b"SEARCH ALL")
    # The client still knows message 1: numbers must not shift under its feet.
    assert searched[0] == b"* SEARCH 1 2 3\r\n" and b"EXPUNGE" not in b"".join(searched)
    noop = two.cmd(b"e", b"NOOP")
    assert b"* 1 EXPUNGE\r\n" in noop
    assert two.cmd(b"f", b"SEARCH ALL")[0] == b"* SEARCH 1 2\r\n"


def test_uid_commands_may_carry_expunges(pair: tuple[RawClient, RawClient]) -> None:
    one, two = pair
    one.cmd(b"a", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    one.cmd(b"b", b"EXPUNGE")
    lines = two.cmd(b"c", b"UID FETCH 1:* UID")
    assert b"* 1 EXPUNGE\r\n" in lines


def test_move_out_is_an_expunge_for_the_other_session(pair: tuple[RawClient, RawClient]) -> None:
    one, two = pair
    moved = one.cmd(b"a", b"MOVE 1 Supprim&AOk-s")
    assert re.match(rb"\* OK \[COPYUID \d+ 1 1\]", moved[0])
    assert two.cmd(b"b", b"CHECK")[:-1] == [b"* 1 EXPUNGE\r\n"]


def test_condstore_sessions_get_modseq(pair: tuple[RawClient, RawClient]) -> None:
    one, two = pair
    two.cmd(b"e", b"SELECT INBOX (CONDSTORE)")
    one.cmd(b"a", b"STORE 2 +FLAGS (\\Answered)")
    lines = two.cmd(b"b", b"NOOP")
    assert re.fullmatch(rb"\* 2 FETCH \(UID 2 FLAGS \(\\Answered\) MODSEQ \(\d+\)\)\r\n", lines[0])


def test_session_closes_its_subscription(server: ServerThread, store: FakeStore, pki: Pki) -> None:
    with RawClient(server.port, pki.client_context()) as client:
        client.login()
        client.cmd(b"a", b"SELECT INBOX")
        client.cmd(b"b", b"SELECT Brouillons")
        assert store.listener_count() == 1
    for _ in range(200):
        if store.listener_count() == 0:
            break
        time.sleep(0.01)
    assert store.listener_count() == 0


def test_idle_autologout(store: FakeStore, pki: Pki) -> None:
    thread = ServerThread(store, pki, idle_timeout=0.5).start()
    try:
        with RawClient(thread.port, pki.client_context()) as client:
            client.login()
            idle(client)
            client.sock.settimeout(3)
            assert client.read_response().startswith(b"* BYE")
    finally:
        thread.stop()


def test_silent_client_is_logged_out_between_commands(store: FakeStore, pki: Pki) -> None:
    thread = ServerThread(store, pki, idle_timeout=0.5).start()
    try:
        with RawClient(thread.port, pki.client_context()) as client:
            client.login()
            # Activity keeps the session: commands spaced under the limit.
            for tag in (b"a", b"b", b"c"):
                time.sleep(0.3)
                assert client.cmd(tag, b"NOOP")[-1].startswith(tag + b" OK")
            client.sock.settimeout(3)
            started = time.monotonic()
            assert client.read_response() == b"* BYE Autologout; idle for too long\r\n"
            assert 0.3 < time.monotonic() - started < 2
            with pytest.raises((EOFError, socket.timeout, ConnectionError)):
                client.read_response()
    finally:
        thread.stop()


def test_server_close_says_bye(store: FakeStore, pki: Pki) -> None:
    thread = ServerThread(store, pki).start()
    client = RawClient(thread.port, pki.client_context())
    try:
        client.login()
        client.cmd(b"a", b"SELECT INBOX")
        thread.stop()
        assert client.read_response() == b"* BYE Server shutting down\r\n"
        with pytest.raises((EOFError, socket.timeout, ConnectionError)):
            client.read_response()
    finally:
        client.close()
    assert store.listener_count() == 0


def test_server_close_drops_unfinished_handshakes(store: FakeStore, pki: Pki) -> None:
    thread = ServerThread(store, pki).start()
    silent = socket.create_connection(("127.0.0.1", thread.port), timeout=5)
    try:
        time.sleep(0.05)
        started = time.monotonic()
        thread.stop()
        assert time.monotonic() - started < 2
        assert silent.recv(10) == b""
    finally:
        silent.close()
    outcomes = [r.__dict__.get("outcome") for r in thread.handler.records]
    assert "tls-shutdown" in outcomes
