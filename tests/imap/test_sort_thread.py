"""SORT, ESORT and THREAD (RFC 5256, RFC 5267) over real sockets, on a box
whose messages were written so that every key orders them differently."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from imap_tools import MailBox

from palais.mailbox.boxes import BoxKind
from palais.storage import open_storage
from palais.storage.bulk import import_messages
from palais.storage.placement import ensure_boxes
from palais.storage.textindex import backfill
from tests.imap.conftest import ADDRESS, Pki, RawClient, ServerThread
from tests.imap.fake_store import FakeStore

# Sent (UTC): m3 1 Mar 12:00 (no Date: INTERNALDATE), m2 2 Mar 08:00, m1 2 Mar
# 09:00, m4 3 Mar 09:00, m5 4 Mar 00:00 (unreadable Date: INTERNALDATE).
# Arrival: m3 1 Mar, m4 2 Mar, m2 4 Mar, m5 4 Mar, m1 5 Mar.
MESSAGES = [
    (
        b"From: =?utf-8?q?Zo=C3=A9?= <zoe@x.test>\r\nTo: greffe@justice.test\r\n"
        b"Cc: Group: c@x.test;\r\nSubject: Re: [greffe] Audience\r\n"
        b"Date: Sun, 2 Mar 2025 10:00:00 +0100\r\nMessage-ID: <1@t>\r\n\r\nUn.\r\n",
        datetime(2025, 3, 5, tzinfo=UTC),
    ),
    (
        b'From: alain@x.test\r\nTo: bruno@x.test\r\nCc: "Quoted Local"@x.test\r\n'
        b"Subject: audience\r\nDate: Sun, 2 Mar 2025 11:00:00 +0300\r\n"
        b"Message-ID: <2@t>\r\n\r\nDeux, un peu plus long.\r\n",
        datetime(2025, 3, 4, tzinfo=UTC),
    ),
    (
        b"From: Bob <bob@x.test>\r\nTo: Anne <anne@x.test>\r\nSubject: Fwd: Pourvoi (fwd)\r\n"
        b"Message-ID: <3@t>\r\nReferences: <2@t>\r\n\r\nTrois, le plus long des corps ici.\r\n",
        datetime(2025, 3, 1, 12, tzinfo=UTC),
    ),
    (
        b"From: =?utf-8?q?Andr=C3=A9?= <andre@x.test>\r\nTo: zed@x.test\r\n"
        b"Subject: [Fwd: pourvoi]\r\nDate: Mon, 3 Mar 2025 09:00:00 +0000\r\n"
        b"Message-ID: <4@t>\r\nIn-Reply-To: <3@t>\r\n\r\n4\r\n",
        datetime(2025, 3, 2, tzinfo=UTC),
    ),
    (
        b"To: undisclosed-recipients:;\r\nSubject: Bilan\t  du  mois\r\nDate: someday\r\n\r\n"
        b"Cinq.\r\n",
        datetime(2025, 3, 4, tzinfo=UTC),
    ),
]


@pytest.fixture
def five(server: ServerThread, store: FakeStore, raw: RawClient) -> RawClient:
    """INBOX with the five messages as sequence numbers 1 to 5, UIDs 2 to 6."""
    server.run(store.deliver, "INBOX", b"Subject: gone\r\n\r\nx\r\n")
    del store.boxes["INBOX"].messages[1]
    for data, when in MESSAGES:
        server.run(store.deliver, "INBOX", data, frozenset(), when)
    raw.login()
    assert raw.cmd(b"s", b"SELECT INBOX")[-1].startswith(b"s OK")
    return raw


def _ok(lines: list[bytes], tag: bytes = b"a") -> list[bytes]:
    assert lines[-1].startswith(tag + b" OK"), lines
    return lines[:-1]


def test_capabilities_name_sort_esort_and_both_thread_algorithms(raw: RawClient) -> None:
    raw.login()
    caps = b"".join(_ok(raw.cmd(b"a", b"CAPABILITY"))).split()
    assert {b"SORT", b"ESORT", b"THREAD=REFERENCES", b"THREAD=ORDEREDSUBJECT"} <= set(caps)
    # CONTEXT=SORT would promise PARTIAL and UPDATE, which are not implemented.
    assert b"CONTEXT=SORT" not in caps


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (b"(ARRIVAL)", b"3 4 2 5 1"),
        (b"(DATE)", b"3 2 1 4 5"),  # UTC instants, INTERNALDATE without a usable Date
        (b"(REVERSE DATE)", b"5 4 1 2 3"),
        (b"(FROM)", b"5 2 4 3 1"),  # local parts: "", alain, andre, bob, zoe
        (b"(TO)", b"3 2 1 5 4"),  # anne, bruno, greffe, undisclosed-recipients (group), zed
        (b"(CC)", b"3 4 5 1 2"),  # "", "", "", GROUP, QUOTED LOCAL
        (b"(SUBJECT)", b"1 2 5 3 4"),  # audience, bilan du mois, pourvoi
        (b"(REVERSE SUBJECT)", b"3 4 5 1 2"),  # ties keep mailbox order
        (b"(SUBJECT REVERSE DATE)", b"1 2 5 4 3"),
        (b"(SIZE)", b"4 5 2 1 3"),
    ],
)
def test_sort_keys(five: RawClient, criteria: bytes, expected: bytes) -> None:
    if criteria == b"(SIZE)":
        sizes = [len(d) for d, _ in MESSAGES]
        expected = b" ".join(b"%d" % (i + 1) for i in sorted(range(5), key=sizes.__getitem__))
    assert _ok(five.cmd(b"a", b"SORT " + criteria + b" UTF-8 ALL")) == [
        b"* SORT " + expected + b"\r\n"
    ]


def test_uid_sort_answers_uids_and_takes_search_keys(five: RawClient) -> None:
    assert _ok(five.cmd(b"a", b"UID SORT (DATE) UTF-8 ALL")) == [b"* SORT 4 3 2 5 6\r\n"]
    assert _ok(five.cmd(b"a", b"UID SORT (REVERSE ARRIVAL) US-ASCII SUBJECT pourvoi")) == [
        b"* SORT 5 4\r\n"
    ]
    # RFC 5256's example: nothing matches, an empty SORT response.
    assert _ok(five.cmd(b"a", b'SORT (SUBJECT) US-ASCII TEXT "not in mailbox"')) == [b"* SORT\r\n"]
    assert _ok(five.cmd(b"a", b"SORT (SUBJECT) UTF-8 SINCE 3-Mar-2025")) == [b"* SORT 1 2 5\r\n"]


@pytest.mark.parametrize(
    "command",
    [
        b"SORT DATE UTF-8 ALL",
        b"SORT () UTF-8 ALL",
        b"SORT (FOO) UTF-8 ALL",
        b"SORT (REVERSE) UTF-8 ALL",
        b"SORT (REVERSE REVERSE DATE) UTF-8 ALL",
        b"SORT (DATE) ALL",
        b"SORT (DATE) UTF-8",
        b"SORT RETURN (PARTIAL 1:5) (DATE) UTF-8 ALL",
        b"THREAD SUBJECT UTF-8 ALL",
        b"THREAD REFERENCES UTF-8",
    ],
)
def test_malformed_sort_and_thread_are_bad(five: RawClient, command: bytes) -> None:
    assert five.cmd(b"a", command)[-1].startswith(b"a BAD")


def test_unknown_charset_is_no_badcharset(five: RawClient) -> None:
    for command in (b"SORT (DATE) KOI8-R ALL", b"THREAD REFERENCES KOI8-R ALL"):
        assert five.cmd(b"a", command)[-1].startswith(b"a NO [BADCHARSET")


def test_sort_needs_a_selected_box(raw: RawClient) -> None:
    raw.login()
    assert raw.cmd(b"a", b"SORT (DATE) UTF-8 ALL")[-1].startswith(b"a BAD")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        # RFC 5267 3.2: MIN and MAX are the first and last in sort order.
        (b"SORT RETURN (MIN MAX) (DATE) UTF-8 ALL", b'(TAG "a") MIN 3 MAX 5'),
        (b"UID SORT RETURN (MIN MAX) (DATE) UTF-8 ALL", b'(TAG "a") UID MIN 4 MAX 6'),
        (b"SORT RETURN (COUNT) (DATE) UTF-8 ALL", b'(TAG "a") COUNT 5'),
        # ALL in sort order.
        (b"UID SORT RETURN (ALL) (DATE) UTF-8 ALL", b'(TAG "a") UID ALL 4,3,2,5:6'),
        (b"SORT RETURN () (SUBJECT) UTF-8 ALL", b'(TAG "a") ALL 1:2,5,3:4'),
        (
            b"SORT RETURN (MIN MAX COUNT ALL) (ARRIVAL) UTF-8 ALL",
            b'(TAG "a") MIN 3 MAX 1 COUNT 5 ALL 3:4,2,5,1',
        ),
        # Nothing matches: COUNT 0 and nothing else.
        (b"SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 SUBJECT nothing", b'(TAG "a") COUNT 0'),
    ],
)
def test_esort(five: RawClient, command: bytes, expected: bytes) -> None:
    assert _ok(five.cmd(b"a", command)) == [b"* ESEARCH " + expected + b"\r\n"]


def test_thread_orderedsubject(five: RawClient) -> None:
    # Groups by base subject, each by sent date, groups by their first's date.
    assert _ok(five.cmd(b"a", b"THREAD ORDEREDSUBJECT UTF-8 ALL")) == [
        b"* THREAD (3 4)(2 1)(5)\r\n"
    ]
    assert _ok(five.cmd(b"a", b"UID THREAD ORDEREDSUBJECT UTF-8 ALL")) == [
        b"* THREAD (4 5)(3 2)(6)\r\n"
    ]


def test_thread_references(five: RawClient) -> None:
    # 2 <- 3 (References) <- 4 (In-Reply-To); 1 ("Re: audience") joins 2 by
    # subject as its reply; 5 alone.
    assert _ok(five.cmd(b"a", b"THREAD REFERENCES UTF-8 ALL")) == [b"* THREAD (2 (3 4)(1))(5)\r\n"]
    assert _ok(five.cmd(b"a", b"UID THREAD REFERENCES US-ASCII NOT SUBJECT bilan")) == [
        b"* THREAD (3 (4 5)(2))\r\n"
    ]
    assert _ok(five.cmd(b"a", b"THREAD REFERENCES UTF-8 SUBJECT nothing")) == [b"* THREAD\r\n"]
    assert _ok(five.cmd(b"a", b"THREAD ORDEREDSUBJECT UTF-8 SUBJECT nothing")) == [b"* THREAD\r\n"]
    # Only the matching messages: 3's parent 2 not among them.
    assert _ok(five.cmd(b"a", b"THREAD REFERENCES UTF-8 SUBJECT pourvoi")) == [
        b"* THREAD (3 4)\r\n"
    ]


def test_sort_sees_new_and_expunged_messages(
    server: ServerThread, store: FakeStore, five: RawClient
) -> None:
    assert _ok(five.cmd(b"a", b"UID SORT (DATE) UTF-8 ALL")) == [b"* SORT 4 3 2 5 6\r\n"]
    server.run(
        store.deliver,
        "INBOX",
        b"Subject: early\r\nDate: Fri, 28 Feb 2025 10:00:00 +0000\r\n\r\nx\r\n",
    )
    assert b"* 6 EXISTS\r\n" in _ok(five.cmd(b"n", b"NOOP"), b"n")
    assert _ok(five.cmd(b"a", b"UID SORT (DATE) UTF-8 ALL")) == [b"* SORT 7 4 3 2 5 6\r\n"]
    assert _ok(five.cmd(b"b", b"UID STORE 3 +FLAGS.SILENT (\\Deleted)"), b"b") == []
    _ok(five.cmd(b"c", b"EXPUNGE"), b"c")
    assert _ok(five.cmd(b"a", b"UID SORT (DATE) UTF-8 ALL")) == [b"* SORT 7 4 2 5 6\r\n"]


def test_imap_tools_sorts_on_the_server(server: ServerThread, store: FakeStore, pki: Pki) -> None:
    for data, when in MESSAGES:
        server.run(store.deliver, "INBOX", data, frozenset(), when)
    with MailBox("127.0.0.1", server.port, ssl_context=pki.client_context()).login(
        ADDRESS, "ignored", initial_folder="INBOX"
    ) as mailbox:
        assert mailbox.uids(sort="DATE") == ["3", "2", "1", "4", "5"]
        assert mailbox.uids(sort=["SUBJECT", "REVERSE DATE"]) == ["1", "2", "5", "4", "3"]
        subjects = [m.subject for m in mailbox.fetch(sort="REVERSE ARRIVAL", mark_seen=False)]
        assert subjects[0] == "Re: [greffe] Audience"
        assert subjects[-1] == "Fwd: Pourvoi (fwd)"


def test_a_repeated_sort_or_thread_follows_what_matches(five: RawClient) -> None:
    for _ in range(2):  # the second time from the kept answers
        assert _ok(five.cmd(b"a", b"SORT (DATE) UTF-8 UNSEEN")) == [b"* SORT 3 2 1 4 5\r\n"]
        assert _ok(five.cmd(b"a", b"THREAD REFERENCES UTF-8 UNSEEN")) == [
            b"* THREAD (2 (3 4)(1))(5)\r\n"
        ]
    _ok(five.cmd(b"b", b"STORE 2 +FLAGS.SILENT (\\Seen)"), b"b")
    assert _ok(five.cmd(b"a", b"SORT (DATE) UTF-8 UNSEEN")) == [b"* SORT 3 1 4 5\r\n"]
    assert _ok(five.cmd(b"a", b"UID SORT (DATE) UTF-8 UNSEEN")) == [b"* SORT 4 2 5 6\r\n"]
    # 2 no longer matches: the dummy left in its place has one child, 3, which
    # rises to the top; 1 ("audience") and 3 ("pourvoi") share no subject.
    assert _ok(five.cmd(b"a", b"THREAD REFERENCES UTF-8 UNSEEN")) == [b"* THREAD (3 4)(1)(5)\r\n"]


def test_sort_thread_and_indexed_search_on_the_real_store(pki: Pki, tmp_path: Path) -> None:
    """The same commands on the SQL store (its substring index, its records)."""
    st = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "blobs")
    st.commits.run_now(lambda conn, ctx: ensure_boxes(conn, ADDRESS, None))
    import_messages(
        st,
        owner=ADDRESS,
        kind=BoxKind.BROUILLONS,
        dossier=None,
        messages=[data for data, _ in MESSAGES],
        sender=ADDRESS,
    )
    backfill(st.writer_engine, st.blobs)  # as the indexing process does
    st.start()
    server = ServerThread(st.mail, pki, idle_timeout=30).start()  # type: ignore[arg-type]
    try:
        with RawClient(server.port, pki.client_context()) as raw:
            raw.login()
            assert raw.cmd(b"s", b"SELECT Brouillons")[-1].startswith(b"s OK")
            # Imported now: 3 and 5 (no usable Date) sort by that INTERNALDATE.
            assert _ok(raw.cmd(b"a", b"SORT (DATE) UTF-8 ALL")) == [b"* SORT 2 1 4 3 5\r\n"]
            assert _ok(raw.cmd(b"a", b"SORT (SUBJECT) UTF-8 ALL")) == [b"* SORT 1 2 5 3 4\r\n"]
            assert _ok(raw.cmd(b"a", b"THREAD REFERENCES UTF-8 ALL")) == [
                b"* THREAD (2 (1)(3 4))(5)\r\n"
            ]
            assert _ok(raw.cmd(b"a", b"SEARCH BODY PLUS")) == [b"* SEARCH 2 3\r\n"]
            assert _ok(raw.cmd(b"a", b"SEARCH TEXT audience")) == [b"* SEARCH 1 2\r\n"]
            assert _ok(raw.cmd(b"a", b"SEARCH TEXT ou")) == [b"* SEARCH 1 3 4\r\n"]
            assert _ok(raw.cmd(b"a", b"SEARCH HEADER References 2@t")) == [b"* SEARCH 3\r\n"]
            assert _ok(raw.cmd(b"a", b"SEARCH SUBJECT pourvoi")) == [b"* SEARCH 3 4\r\n"]
            assert _ok(raw.cmd(b"a", b"SORT (REVERSE DATE) UTF-8 TEXT POURVOI")) == [
                b"* SORT 3 4\r\n"
            ]
    finally:
        server.stop()
        st.close()


def test_sort_with_a_modseq_key_reports_the_modseq(five: RawClient) -> None:
    # RFC 7162 3.1.5: the highest MODSEQ of the messages returned.
    lines = _ok(five.cmd(b"f", b"UID FETCH 1:* (MODSEQ)"), b"f")
    modseqs = {
        int(m.group(1)): int(m.group(2))
        for m in (re.search(rb"UID (\d+) MODSEQ \((\d+)\)", x) for x in lines)
        if m
    }
    highest = max(modseqs.values())
    assert _ok(five.cmd(b"a", b"SORT (DATE) UTF-8 MODSEQ 1")) == [
        b"* SORT 3 2 1 4 5 (MODSEQ %d)\r\n" % highest
    ]
    # ESORT MIN alone: the first in sort order (message 3, UID 4) and its MODSEQ.
    assert _ok(five.cmd(b"a", b"SORT RETURN (MIN) (DATE) UTF-8 MODSEQ 1")) == [
        b'* ESEARCH (TAG "a") MIN 3 MODSEQ %d\r\n' % modseqs[4]
    ]
    assert _ok(five.cmd(b"a", b"SORT (DATE) UTF-8 MODSEQ %d" % (highest + 1))) == [b"* SORT\r\n"]
