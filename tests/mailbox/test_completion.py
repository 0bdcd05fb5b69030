"""Completing a submitted message (RFC 6409 section 8); its trace line (RFC 5321 section 4.4)."""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from datetime import datetime, timedelta, timezone

from palais.mailbox.completion import (
    Arrival,
    HeaderPresence,
    arrival_digest,
    completion,
    header_presence,
)
from palais.mailbox.identity import Identity, Role

WHO = Identity(
    account_id=1,
    address="camille.dupont@avocats.palais.test",
    role=Role.AVOCAT,
    display_name="Camille DUPONT",
    fingerprint="ab" * 32,
    mailbox_owner="camille.dupont@avocats.palais.test",
)
AT = datetime(2026, 11, 30, 18, 5, 7, tzinfo=timezone(timedelta(hours=1)))
ARRIVAL = Arrival(
    who=WHO,
    helo="client.example",
    peer="192.0.2.7",
    by="mail.palais.test",
    protocol="ESMTPS",
    at=AT,
)
COMPLETE = (
    b"From: Camille <camille.dupont@avocats.palais.test>\r\n"
    b"Date: Mon, 30 Nov 2026 17:00:00 +0100\r\n"
    b"Message-ID:\r\n <abc@avocats.palais.test>\r\n"
    b"Subject: x\r\n\r\n"
)
# RFC 5321 section 4.4, Stamp (comments allowed where CFWS is).
STAMP = re.compile(
    r"from (?P<from>\S+)(?: \((?P<literal>\[[^]]+\])\))?\s+"
    r"\((?P<comment>[^)]*)\)\s+by (?P<by>\S+) with (?P<with>ESMTPS|ESMTPSA);\s+(?P<date>.+)"
)


def parse(prefix: bytes, rest: bytes = b"Subject: x\r\n\r\nbody\r\n") -> email.message.Message:
    return email.message_from_bytes(prefix + rest, policy=email.policy.compat32)


def test_presence_reads_names_at_line_starts_only() -> None:
    found = header_presence(COMPLETE)
    assert found == HeaderPresence(date=True, from_=True, message_id="<abc@avocats.palais.test>")
    # Names inside values or folded lines are not fields; case and blanks before the colon are.
    head = b"Subject: Date: from\r\n x-from: y\r\nMESSAGE-ID  : <m@x>\r\n\r\n"
    assert header_presence(head) == HeaderPresence(date=False, from_=False, message_id="<m@x>")
    assert header_presence(b"\r\n") == HeaderPresence(date=False, from_=False, message_id=None)


def test_complete_message_gets_only_the_trace_line() -> None:
    prefix = completion(header_presence(COMPLETE), ARRIVAL, lambda: "never")
    assert prefix.startswith(b"Received: ")
    assert prefix.endswith(b"\r\n")
    message = parse(prefix)
    assert list(message.keys()) == ["Received", "Subject"]
    for line in prefix.split(b"\r\n"):
        assert len(line) <= 78, line


def test_trace_line_names_identity_fingerprint_gateway_and_date() -> None:
    prefix = completion(header_presence(COMPLETE), ARRIVAL, lambda: "never")
    received = " ".join(parse(prefix)["Received"].split())
    found = STAMP.fullmatch(received)
    assert found is not None, received
    assert found["from"] == "client.example" and found["literal"] == "[192.0.2.7]"
    assert WHO.address in found["comment"] and "sha256 " + WHO.fingerprint in found["comment"]
    assert found["by"] == "mail.palais.test" and found["with"] == "ESMTPS"
    assert email.utils.parsedate_to_datetime(found["date"]) == AT


def test_missing_fields_are_added() -> None:
    prefix = completion(header_presence(b"Subject: x\r\n\r\n"), ARRIVAL, lambda: "f00d")
    message = parse(prefix)
    assert email.utils.parsedate_to_datetime(message["Date"]) == AT
    assert message["Message-ID"] == "<f00d@mail.palais.test>"
    assert email.utils.parseaddr(message["From"]) == ("Camille DUPONT", WHO.address)


def test_non_ascii_display_name_is_encoded() -> None:
    who = Identity(
        account_id=2,
        address="helene.lefevre@avocats.palais.test",
        role=Role.AVOCAT,
        display_name="Hélène LEFÈVRE",
        fingerprint="cd" * 32,
        mailbox_owner="helene.lefevre@avocats.palais.test",
    )
    arrival = Arrival(who=who, helo="h", peer="::1", by="gw", protocol="ESMTPSA", at=AT)
    prefix = completion(HeaderPresence(False, False, "<m@x>"), arrival, lambda: "x")
    assert prefix.isascii()
    message = parse(prefix)
    decoded = str(email.header.make_header(email.header.decode_header(message["From"])))
    assert decoded == f"Hélène LEFÈVRE <{who.address}>"
    assert "from h ([IPv6:::1])" in " ".join(message["Received"].split())


def test_odd_helo_and_address_stay_in_grammar() -> None:
    who = Identity(
        account_id=3,
        address='"a(b)\\c"@avocats.palais.test',
        role=Role.AVOCAT,
        display_name="X",
        fingerprint="ef" * 32,
        mailbox_owner="x@avocats.palais.test",
    )
    arrival = Arrival(
        who=who, helo="bad name (x)", peer=None, by="not a host", protocol="ESMTPS", at=AT
    )
    received = " ".join(
        parse(completion(HeaderPresence(True, True, "<m>"), arrival, str))["Received"].split()
    )
    assert received.startswith("from unknown (authenticated by certificate ")
    assert '\\"a\\(b\\)\\\\c\\"' not in received  # quotes are ctext, left alone
    assert '"a\\(b\\)\\\\c"@avocats.palais.test' in received
    assert " by localhost with ESMTPS;" in received


def test_an_arrival_is_its_sender_and_the_bytes_as_submitted() -> None:
    data = COMPLETE + b"body\r\n"
    digest = arrival_digest(WHO.address, data)
    assert digest == arrival_digest(WHO.address, data) and len(digest) == 64
    # Another sender, or other bytes: another message.
    assert arrival_digest("x@y", data) != digest
    assert arrival_digest(WHO.address, data + b"!") != digest
    # The sender's address and the bytes do not run into each other.
    assert arrival_digest("a@b", b"c" + data) != arrival_digest("a@bc", data)
