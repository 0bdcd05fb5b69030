"""IMAP4rev2 on a running gateway with its real store: imaplib enables it,
SELECT answers a LIST response and no RECENT, SEARCH answers ESEARCH, a
saved search result ($) is fetched, and mailbox names travel in UTF-8."""

from __future__ import annotations

import uuid

from tests.e2e.instance import Instance


def test_rev2_session_on_the_real_store(instance: Instance) -> None:
    subject = f"rev2 {uuid.uuid4().hex}"
    instance.submit(subject)
    conn = instance.imap("greffier1")
    try:
        assert "IMAP4REV2" in conn.capabilities  # the greeting's
        caps = conn.capability()[1][0]
        assert isinstance(caps, bytes) and b"SEARCHRES" in caps.split()
        assert conn.enable("IMAP4rev2")[0] == "OK"
        assert conn.untagged_responses.pop("ENABLED") == [b"IMAP4rev2"]
        assert conn.select("INBOX")[0] == "OK"
        listed = [x for x in conn.untagged_responses.get("LIST", []) if isinstance(x, bytes)]
        assert listed and listed[-1].endswith(b' "/" "INBOX"')
        assert "RECENT" not in conn.untagged_responses
        typ, _ = conn.uid("SEARCH", "RETURN", "(SAVE)", "SUBJECT", f'"{subject}"')
        assert typ == "OK" and "ESEARCH" not in conn.untagged_responses
        typ, data = conn.uid("FETCH", "$", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        fetched = data[0]
        assert isinstance(fetched, tuple) and subject.encode() in fetched[1]
        uid = fetched[0].split(b"UID ")[1].split(b" ")[0]
        assert conn.uid("SEARCH", "SUBJECT", f'"{subject}"')[0] == "OK"
        esearch = [e for e in conn.untagged_responses.pop("ESEARCH") if isinstance(e, bytes)]
        assert [e.split(b")", 1)[1] for e in esearch] == [b" UID ALL " + uid]
    finally:
        conn.logout()


def test_rev2_mailbox_names_in_utf8(instance: Instance) -> None:
    conn = instance.imap("avocat1")
    try:
        typ, data = conn.list('""', "Envoy*")
        names = [d for d in data if isinstance(d, bytes)]
        assert typ == "OK" and any(d.endswith(b'"Envoy&AOk-s"') for d in names)
        assert conn.enable("IMAP4rev2")[0] == "OK"
        typ, data = conn.list('""', "Envoy*")
        names = [d for d in data if isinstance(d, bytes)]
        assert typ == "OK" and any(d.endswith('"Envoyés"'.encode()) for d in names), data
        assert conn.select('"Envoyés"'.encode())[0] == "OK"  # type: ignore[arg-type]
    finally:
        conn.logout()
