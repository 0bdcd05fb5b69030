"""Commands over a real TLS connection, checked on the exact bytes."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from palais.mailbox.model import FlagMode
from tests.imap.conftest import RawClient, ServerThread
from tests.imap.fake_store import FakeStore


def message(subject: str, body: str = "Corps du message.\r\n", **headers: str) -> bytes:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return (
        f"From: Jean Dupont <jean.dupont@avocats.test>\r\nTo: greffe@cph.justice.test\r\n"
        f"Subject: {subject}\r\nDate: Mon, 3 Mar 2025 10:00:00 +0100\r\n{extra}"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


MULTIPART = (
    b"From: a@b.test\r\nSubject: pieces\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"preamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n--XX\r\n"
    b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
    b"--XX--\r\n"
)


@pytest.fixture
def box(server: ServerThread, store: FakeStore, raw: RawClient) -> RawClient:
    """Logged in, INBOX selected with three messages (UIDs 1..3)."""
    server.run(store.deliver, "INBOX", message("[2025-0000138] Conclusions"))
    server.run(store.deliver, "INBOX", MULTIPART, frozenset({"\\Seen"}))
    server.run(
        store.deliver,
        "INBOX",
        message(
            "Relance", "Merci de r=C3=A9pondre.\r\n", Content_Transfer_Encoding="quoted-printable"
        ),
        frozenset(),
        datetime(2025, 4, 1, 12, 0, tzinfo=UTC),
    )
    raw.login()
    raw.cmd(b"s", b"SELECT INBOX")
    return raw


def tagged(lines: list[bytes]) -> bytes:
    return lines[-1]


def test_list_tree_with_attributes(raw: RawClient) -> None:
    raw.login()
    lines = raw.cmd(b"a", b'LIST "" "*"')
    assert tagged(lines).startswith(b"a OK")
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n' in lines
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Envoy&AOk-s"\r\n' in lines
    assert b'* LIST (\\HasNoChildren \\Trash) "/" "Supprim&AOk-s"\r\n' in lines
    assert b'* LIST (\\Noselect \\HasChildren) "/" "Dossiers"\r\n' in lines
    assert b'* LIST (\\HasNoChildren) "/" "Dossiers/2025-0000138/Re&AOc-us"\r\n' in lines
    top = raw.cmd(b"b", b'LIST "" %')
    assert len(top) == 7  # six top-level boxes and the OK
    assert raw.cmd(b"c", b'LIST "" ""')[0] == b'* LIST (\\Noselect) "/" ""\r\n'
    sub = raw.cmd(b"d", b'LIST "Dossiers/" %')
    assert sub[0] == b'* LIST (\\Noselect \\HasChildren) "/" "Dossiers/2025-0000138"\r\n'
    special = raw.cmd(b"e", b'LIST (SPECIAL-USE) "" "*" RETURN (SUBSCRIBED)')
    assert len(special) == 4 and all(b"\\Subscribed" in x for x in special[:-1])
    assert raw.cmd(b"f", b'list "" inbox')[0] == b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
    lsub = raw.cmd(b"g", b'LSUB "" "*"')
    assert lsub[0].startswith(b"* LSUB ") and tagged(lsub).startswith(b"g OK")


def test_utf8_accept_sends_names_in_utf8(raw: RawClient) -> None:
    raw.login()
    assert (
        raw.cmd(b"a", b"ENABLE UTF8=ACCEPT CONDSTORE")[0] == b"* ENABLED UTF8=ACCEPT CONDSTORE\r\n"
    )
    lines = raw.cmd(b"b", 'LIST "" "Envoyés"'.encode())
    assert lines[0] == '* LIST (\\HasNoChildren \\Sent) "/" "Envoyés"\r\n'.encode()


def test_namespace_id_status(box: RawClient) -> None:
    assert box.cmd(b"a", b"NAMESPACE")[0] == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
    assert box.cmd(b"b", b'ID ("name" "test")')[0].startswith(b'* ID ("name" "Palais"')
    status = box.cmd(
        b"c", b"STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY HIGHESTMODSEQ RECENT)"
    )
    assert re.match(
        rb'\* STATUS "INBOX" \(MESSAGES 3 UNSEEN 2 UIDNEXT 4 UIDVALIDITY \d+ '
        rb"HIGHESTMODSEQ \d+ RECENT 0\)",
        status[0],
    )
    assert box.cmd(b"d", b"STATUS Dossiers (MESSAGES)")[-1].startswith(b"d NO")
    assert box.cmd(b"e", b"STATUS Nowhere (MESSAGES)")[-1].startswith(b"e NO [NONEXISTENT]")


def test_select_responses(raw: RawClient, server: ServerThread, store: FakeStore) -> None:
    server.run(store.deliver, "INBOX", message("one"), frozenset({"\\Seen"}))
    server.run(store.deliver, "INBOX", message("two"))
    raw.login()
    lines = raw.cmd(b"a", b"SELECT INBOX (CONDSTORE)")
    text = b"".join(lines)
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n" in text
    assert b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]" in text
    assert b"* 2 EXISTS\r\n* 0 RECENT\r\n" in text
    assert b"* OK [UNSEEN 2]" in text and b"* OK [UIDNEXT 3]" in text
    assert re.search(rb"\* OK \[UIDVALIDITY \d+\]", text) and b"[HIGHESTMODSEQ " in text
    assert tagged(lines) == b"a OK [READ-WRITE] SELECT completed\r\n"
    examine = raw.cmd(b"b", b"EXAMINE INBOX")
    assert b"[PERMANENTFLAGS ()]" in b"".join(examine)
    assert tagged(examine).startswith(b"b OK [READ-ONLY]")
    assert raw.cmd(b"c", b"STORE 1 +FLAGS (\\Flagged)")[-1].startswith(b"c NO")
    assert raw.cmd(b"d", b"SELECT Dossiers")[-1].startswith(b"d NO")
    assert raw.cmd(b"e", b"FETCH 1 FLAGS")[-1].startswith(b"e BAD")  # failed SELECT deselects


def test_fetch_items(box: RawClient) -> None:
    lines = box.cmd(b"a", b"FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
    first = lines[0]
    assert first.startswith(b'* 1 FETCH (FLAGS () INTERNALDATE "14-Mar-2025 09:30:00 +0000" ')
    assert b'ENVELOPE ("Mon, 3 Mar 2025 10:00:00 +0100" "[2025-0000138] Conclusions" '
    assert b'(("Jean Dupont" NIL "jean.dupont" "avocats.test"))' in first
    structure = box.cmd(b"b", b"FETCH 2 BODYSTRUCTURE")[0]
    assert structure == (
        b'* 2 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0 '
        b'NIL NIL NIL NIL)("application" "pdf" NIL NIL NIL "base64" 8 NIL NIL NIL NIL) "mixed" '
        b'("boundary" "XX") NIL NIL NIL))\r\n'
    )
    body = box.cmd(b"c", b"FETCH 2 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[]<10.5>)")[0]
    assert body == (
        b"* 2 FETCH (BODY[1] {10}\r\nfirst part BODY[2.MIME] {68}\r\n"
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n "
        b"BODY[]<10> {5}\r\ntest\r)\r\n"
    )
    fields = box.cmd(b"d", b"UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject Date)])")[0]
    assert fields == (
        b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT DATE)] {77}\r\n"
        b"Subject: [2025-0000138] Conclusions\r\nDate: Mon, 3 Mar 2025 10:00:00 +0100\r\n\r\n)\r\n"
    )
    assert box.cmd(b"e", b"FETCH 1 BODY.PEEK[3]")[0] == b"* 1 FETCH (BODY[3] NIL)\r\n"
    assert box.cmd(b"f", b"FETCH 1 FAST")[0].startswith(b"* 1 FETCH (FLAGS () INTERNALDATE ")


def test_body_fetch_sets_seen_and_reports_flags(box: RawClient, store: FakeStore) -> None:
    lines = box.cmd(b"a", b"FETCH 1 BODY[TEXT]")
    assert lines[0] == b"* 1 FETCH (BODY[TEXT] {19}\r\nCorps du message.\r\n FLAGS (\\Seen))\r\n"
    assert store.flags_of("INBOX", 1) == {"\\Seen"}
    store_calls = [c for c in store.calls if c[0] == "store_flags"]
    assert store_calls == [("store_flags", 1, [1], FlagMode.ADD, frozenset({"\\Seen"}), None)]
    # Already seen: no second write; and the store's echo is not reported again.
    again = box.cmd(b"b", b"FETCH 1 RFC822.TEXT")
    assert len(again) == 2 and b"FLAGS" not in again[0]
    assert len([c for c in store.calls if c[0] == "store_flags"]) == 1
    assert box.cmd(b"c", b"NOOP") == [b"c OK NOOP completed\r\n"]


def test_examine_does_not_set_seen(box: RawClient, store: FakeStore) -> None:
    box.cmd(b"a", b"EXAMINE INBOX")
    box.cmd(b"b", b"FETCH 1 BODY[]")
    assert store.flags_of("INBOX", 1) == frozenset()


def test_uid_fetch_ranges_and_changedsince(box: RawClient) -> None:
    lines = box.cmd(b"a", b"UID FETCH 2:* (FLAGS)")
    assert lines[:2] == [b"* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n", b"* 3 FETCH (UID 3 FLAGS ())\r\n"]
    lines = box.cmd(b"b", b"UID FETCH 999:* UID")
    assert lines[0] == b"* 3 FETCH (UID 3)\r\n"
    box.cmd(b"c", b"STORE 1 +FLAGS.SILENT (\\Flagged)")
    changed = box.cmd(b"d", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE 4)")
    # The first CONDSTORE enabling command tells HIGHESTMODSEQ (RFC 7162 3.1).
    assert re.fullmatch(rb"\* OK \[HIGHESTMODSEQ \d+\] .*\r\n", changed.pop(0))
    assert len(changed) == 2
    assert re.match(rb"\* 1 FETCH \(UID 1 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", changed[0])
    assert box.cmd(b"e", b"FETCH 4 FLAGS")[-1].startswith(b"e BAD")


def test_store_variants(box: RawClient, store: FakeStore) -> None:
    assert box.cmd(b"a", b"STORE 1:2 +FLAGS (\\Flagged $Urgent)")[:3] == [
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Urgent)\r\n",
        b"* 1 FETCH (FLAGS ($Urgent \\Flagged))\r\n",
        b"* 2 FETCH (FLAGS ($Urgent \\Flagged \\Seen))\r\n",
    ]
    assert box.cmd(b"b", b"STORE 2 -FLAGS.SILENT \\Seen") == [b"b OK STORE completed\r\n"]
    assert store.flags_of("INBOX", 2) == {"$Urgent", "\\Flagged"}
    assert (
        box.cmd(b"c", b"UID STORE 3 FLAGS (\\Answered)")[0]
        == b"* 3 FETCH (UID 3 FLAGS (\\Answered))\r\n"
    )
    assert box.cmd(b"d", b"STORE 1 +FLAGS (\\Recent)")[-1].startswith(b"d OK")
    assert box.cmd(b"e", b"STORE 1 +FLAGS (\\Bogus)")[-1].startswith(b"e BAD")


def test_uid_store_unchangedsince(box: RawClient, store: FakeStore) -> None:
    fetched = box.cmd(b"a", b"UID FETCH 1:3 (MODSEQ)")
    modseqs = [int(m) for m in re.findall(rb"MODSEQ \((\d+)\)", b"".join(fetched))]
    box.cmd(b"b", b"UID STORE 2 +FLAGS.SILENT (\\Answered)")  # 2 changes behind the client's back
    lines = box.cmd(b"c", b"UID STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS (\\Flagged)" % max(modseqs))
    assert lines[-1] == b"c OK [MODIFIED 2] Conditional STORE failed for some messages\r\n"
    assert [re.match(rb"\* (\d+) FETCH \(UID (\d+) ", x).groups() for x in lines[:-1]] == [  # type: ignore[union-attr]
        (b"1", b"1"),
        (b"3", b"3"),
    ]
    assert all(b"MODSEQ (" in x for x in lines[:-1])
    assert "\\Flagged" not in store.flags_of("INBOX", 2)


def test_search_keys(box: RawClient) -> None:
    def search(query: bytes) -> bytes:
        lines = box.cmd(b"s", query)
        assert tagged(lines).startswith(b"s OK"), lines
        return lines[0].rstrip(b"\r\n")

    assert search(b"SEARCH ALL") == b"* SEARCH 1 2 3"
    assert search(b"SEARCH UNSEEN") == b"* SEARCH 1 3"
    assert search(b"SEARCH SEEN NOT 1") == b"* SEARCH 2"
    assert search(b"UID SEARCH OR SUBJECT relance SUBJECT pieces") == b"* SEARCH 2 3"
    assert search(b"SEARCH FROM dupont") == b"* SEARCH 1 3"
    assert search(b'SEARCH HEADER Content-Type "multipart"') == b"* SEARCH 2"
    assert search(b"SEARCH SINCE 1-Apr-2025") == b"* SEARCH 3"
    assert search(b"SEARCH BEFORE 1-Apr-2025 ON 14-Mar-2025") == b"* SEARCH 1 2"
    assert search(b"SEARCH SENTON 3-Mar-2025") == b"* SEARCH 1 3"
    assert search(b"SEARCH SENTSINCE 4-Mar-2025") == b"* SEARCH"
    assert search(b"SEARCH LARGER 229") == b"* SEARCH 1 3"
    assert search(b"SEARCH SMALLER 229") == b"* SEARCH 2"
    assert search(b'SEARCH BODY "first part"') == b"* SEARCH 2"
    assert search("SEARCH CHARSET UTF-8 BODY répondre".encode()) == b"* SEARCH 3"  # QP decoded
    assert search(b"SEARCH TEXT conclusions") == b"* SEARCH 1"
    assert search(b"SEARCH UID 2:* NOT DELETED") == b"* SEARCH 2 3"
    assert search(b"SEARCH 2:3 (SEEN)") == b"* SEARCH 2"
    assert search(b"SEARCH NEW") == b"* SEARCH"
    assert search(b"SEARCH KEYWORD $Urgent") == b"* SEARCH"
    enabling = box.cmd(b"s", b"SEARCH MODSEQ 1")  # CONDSTORE enabling: HIGHESTMODSEQ first
    assert re.fullmatch(rb"\* OK \[HIGHESTMODSEQ \d+\] .*\r\n", enabling[0])
    assert re.fullmatch(rb"\* SEARCH 1 2 3 \(MODSEQ \d+\)\r\n", enabling[1])
    lines = box.cmd(b"t", b"SEARCH CHARSET KOI8-R ALL")
    assert tagged(lines) == b"t NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n"


def test_esearch(box: RawClient) -> None:
    assert box.cmd(b"a1", b"SEARCH RETURN (MIN MAX COUNT) UNSEEN")[0] == (
        b'* ESEARCH (TAG "a1") MIN 1 MAX 3 COUNT 2\r\n'
    )
    assert box.cmd(b"a2", b"UID SEARCH RETURN () ALL")[0] == b'* ESEARCH (TAG "a2") UID ALL 1:3\r\n'
    assert box.cmd(b"a3", b"SEARCH RETURN (COUNT ALL) DELETED")[0] == (
        b'* ESEARCH (TAG "a3") COUNT 0\r\n'
    )


def test_copy_move_expunge(box: RawClient, store: FakeStore) -> None:
    lines = box.cmd(b"a", b"COPY 1:2 Supprim&AOk-s")
    assert re.fullmatch(rb"a OK \[COPYUID \d+ 1:2 1:2\] COPY completed\r\n", lines[-1])
    assert len(store.boxes["Supprimés"].messages) == 2
    lines = box.cmd(b"b", b"UID MOVE 2 Envoy&AOk-s")
    assert re.fullmatch(rb"\* OK \[COPYUID \d+ 2 1\] Moved\r\n", lines[0])
    assert lines[1:] == [b"* 2 EXPUNGE\r\n", b"b OK MOVE completed\r\n"]
    assert box.cmd(b"c", b"COPY 1 Nowhere")[-1].startswith(b"c NO [TRYCREATE]")
    box.cmd(b"d", b"STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    lines = box.cmd(b"e", b"EXPUNGE")
    assert lines == [b"* 2 EXPUNGE\r\n", b"* 1 EXPUNGE\r\n", b"e OK EXPUNGE completed\r\n"]
    assert box.cmd(b"f", b"SEARCH ALL")[0] == b"* SEARCH\r\n"
    assert box.cmd(b"g", b"MOVE 1 INBOX")[-1].startswith(b"g BAD")


def test_uid_expunge_and_close(box: RawClient, store: FakeStore) -> None:
    box.cmd(b"a", b"STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    assert box.cmd(b"b", b"UID EXPUNGE 3") == [b"* 3 EXPUNGE\r\n", b"b OK EXPUNGE completed\r\n"]
    assert box.cmd(b"c", b"CLOSE") == [b"c OK CLOSE completed\r\n"]
    assert store.boxes["INBOX"].messages == {}
    assert box.cmd(b"d", b"FETCH 1 FLAGS")[-1].startswith(b"d BAD")


def test_unselect_keeps_deleted_messages(box: RawClient, store: FakeStore) -> None:
    box.cmd(b"a", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert box.cmd(b"b", b"UNSELECT") == [b"b OK UNSELECT completed\r\n"]
    assert len(store.boxes["INBOX"].messages) == 3
    assert store.listener_count() == 0


APPENDED = b"From: me@avocats.test\r\nSubject: brouillon\r\n\r\nTexte \xc3\xa9crit.\r\n"


def test_append_with_synchronizing_literal(raw: RawClient, store: FakeStore) -> None:
    raw.login()
    raw.send(
        b'a APPEND Brouillons (\\Draft \\Seen) "05-Mar-2025 14:30:00 +0100" {%d}\r\n'
        % len(APPENDED)
    )
    assert raw.read_response().startswith(b"+ ")
    raw.send(APPENDED + b"\r\n")
    reply = raw.until_tagged(b"a")[-1]
    assert re.fullmatch(rb"a OK \[APPENDUID \d+ 1\] APPEND completed\r\n", reply)
    msg = store.boxes["Brouillons"].messages[1]
    assert store.blobs[msg.blob] == APPENDED
    assert msg.flags == {"\\Draft", "\\Seen"}
    assert msg.internaldate.isoformat() == "2025-03-05T14:30:00+01:00"


def test_append_literal_plus_and_byte_exact_fetch(raw: RawClient) -> None:
    raw.login()
    raw.send(b"a APPEND INBOX {%d+}\r\n" % len(APPENDED) + APPENDED + b"\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a OK [APPENDUID ")
    raw.cmd(b"b", b"SELECT INBOX")
    lines = raw.cmd(b"c", b"UID FETCH 1 (BODY.PEEK[] BODY.PEEK[]<0.4> RFC822.SIZE)")
    assert lines[0] == (
        b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(APPENDED)
        + APPENDED
        + b" BODY[]<0> {4}\r\nFrom RFC822.SIZE %d)\r\n" % len(APPENDED)
    )


def test_append_to_selected_box_reports_exists(box: RawClient) -> None:
    lines = box.cmd(b"a", b"APPEND INBOX {%d+}\r\n" % len(APPENDED) + APPENDED)
    assert lines[0] == b"* 4 EXISTS\r\n"
    assert box.cmd(b"b", b"NOOP") == [b"b OK NOOP completed\r\n"]


def test_append_bare_lf_is_stored_as_crlf(raw: RawClient, store: FakeStore) -> None:
    raw.login()
    data = b"Subject: lf\n\nline\n"
    raw.send(b"a APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
    raw.until_tagged(b"a")
    msg = store.boxes["INBOX"].messages[1]
    assert store.blobs[msg.blob] == b"Subject: lf\r\n\r\nline\r\n"


def test_append_refusals(raw: RawClient) -> None:
    raw.login()
    raw.send(b"a APPEND INBOX {2000000}\r\n")
    assert raw.read_response() == b"a NO [TOOBIG] Message too big\r\n"
    raw.send(b"b APPEND INBOX {2000000+}\r\n" + b"x" * 2_000_000 + b"\r\n")
    assert raw.read_response() == b"b NO [TOOBIG] Message too big\r\n"
    raw.send(b"c APPEND Nowhere {3+}\r\nabc\r\n")
    assert raw.read_response().startswith(b"c NO [TRYCREATE]")
    raw.send(b"d APPEND Dossiers {3+}\r\nabc\r\n")
    assert raw.read_response().startswith(b"d NO [CANNOT]")
    assert raw.cmd(b"e", b"NOOP") == [b"e OK NOOP completed\r\n"]


def test_mailbox_management_is_refused(raw: RawClient) -> None:
    raw.login()
    assert raw.cmd(b"a", b"CREATE Nouveau")[-1].startswith(b"a NO [CANNOT]")
    assert raw.cmd(b"b", b"CREATE INBOX")[-1].startswith(b"b NO [ALREADYEXISTS]")
    assert raw.cmd(b"c", b"DELETE Nowhere")[-1].startswith(b"c NO [NONEXISTENT]")
    assert raw.cmd(b"d", b"RENAME INBOX Autre")[-1].startswith(b"d NO [CANNOT]")
    assert raw.cmd(b"e", b"SUBSCRIBE INBOX")[-1].startswith(b"e OK")
    assert raw.cmd(b"f", b"UNSUBSCRIBE INBOX")[-1].startswith(b"f OK")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"", b"* BAD"),
        (b"+tag NOOP", b"* BAD"),
        (b"a", b"a BAD"),
        (b"a FROBNICATE", b"a BAD Unknown command"),
        (b'a SELECT "unterminated', b"a BAD SELECT: Unterminated quoted string"),
        (b"a FETCH 1:* (FLAGS", b"a BAD"),
        (b"a FETCH x FLAGS", b"a BAD"),
        (b"a UID", b"a BAD"),
        (b"a NOOP extra", b"a BAD NOOP: Unexpected extra arguments"),
        (b"a SEARCH OR SEEN", b"a BAD"),
        (b"a STORE 1 FLAGZ (\\Seen)", b"a BAD"),
        (b"a LOGIN {3}", b"a BAD"),
    ],
)
def test_malformed_commands_get_bad_and_connection_survives(
    box: RawClient, command: bytes, expected: bytes
) -> None:
    box.send(command + b"\r\n")
    reply = box.read_response()
    if reply.startswith(b"+ "):  # the literal announced at the end; send nothing useful
        box.send(b"abc\r\n")
        reply = box.read_response()
    assert reply.startswith(expected), reply
    assert box.cmd(b"z", b"NOOP")[-1] == b"z OK NOOP completed\r\n"


def test_over_long_line_is_refused_and_connection_survives(box: RawClient) -> None:
    box.send(b"a FETCH " + b"1," * 40_000 + b"1 FLAGS\r\n")
    assert box.read_response() == b"a BAD Command line too long\r\n"
    assert box.cmd(b"z", b"NOOP")[-1] == b"z OK NOOP completed\r\n"


def test_internal_error_is_hidden_and_session_goes_on(
    box: RawClient, server: ServerThread, store: FakeStore
) -> None:
    async def broken(*args: object) -> object:
        raise RuntimeError("secret database path /var/lib/palais")

    store.search_header = broken  # type: ignore[method-assign,assignment]
    lines = box.cmd(b"a", b"SEARCH SUBJECT x")
    assert lines[-1] == b"a NO [SERVERBUG] Internal error\r\n"
    assert b"secret" not in b"".join(lines)
    assert box.cmd(b"b", b"NOOP")[-1] == b"b OK NOOP completed\r\n"
    assert any("imap command failed" in r.getMessage() for r in server.handler.records)


def test_last_envelopes_of_a_big_box_read_headers_only(
    raw: RawClient, server: ServerThread, store: FakeStore
) -> None:
    def fill() -> None:
        for i in range(2000):
            store.deliver("INBOX", message(f"n°{i}", "x" * 200 + "\r\n"))

    server.run(fill)
    raw.login()
    assert b"* 2000 EXISTS\r\n" in raw.cmd(b"a", b"SELECT INBOX")
    store.calls.clear()
    lines = raw.cmd(b"b", b"FETCH 1951:* (UID FLAGS ENVELOPE)")
    assert len(lines) == 51 and tagged(lines).startswith(b"b OK")
    assert store.read_count == 0
    kinds = {c[0] for c in store.calls}
    assert kinds == {"records", "recall", "read_header", "remember"}
    assert next(c for c in store.calls if c[0] == "records")[2] == list(range(1951, 2001))
    # The second time, the envelopes come from the store's memo: no header is read.
    store.calls.clear()
    assert raw.cmd(b"c", b"FETCH 1951:* (UID FLAGS ENVELOPE)")[:-1] == lines[:-1]
    assert {c[0] for c in store.calls} == {"records", "recall"}
