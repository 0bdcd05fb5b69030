"""BODYSTRUCTURE, ENVELOPE and byte-exact sections.

The expected BODYSTRUCTURE strings are Dovecot's output for the same
messages (its test-imap-bodystructure cases, with CRLF line endings).
"""

from __future__ import annotations

import pytest

from palais.gateway.imap.envelope import envelope, parse_addresses
from palais.gateway.imap.mime import (
    SectionSpec,
    bodystructure,
    extract,
    header_fields,
    parse_message,
)
from palais.gateway.imap.response import encode


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


DOVECOT_NESTED = crlf(
    "From: user@domain.org\nDate: Sat, 24 Mar 2007 23:00:00 +0200\nMime-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="foo\n bar"\n\nRoot MIME prologue\n\n--foo bar\n'
    'Content-Type: text/x-myown; charset=us-ascii; foo="quoted\\"string"\n'
    "Content-ID: <foo@example.com>\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    "Content-Disposition: inline; foo=bar\nContent-Description: hellodescription\n"
    "Content-Language: en, fi, se\nContent-Location: http://example.com/test.txt\n\nhello\n\n"
    "--foo bar\nContent-Type: message/rfc822\n\nFrom: sub@domain.org\n"
    "To: sub-to1@domain.org, sub-to2@domain.org\nDate: Sun, 12 Aug 2012 12:34:56 +0300\n"
    'Subject: submsg\nContent-Type: multipart/alternative; boundary="sub1"\n\n'
    "Sub MIME prologue\n--sub1\nContent-Type: text/html\nContent-Transfer-Encoding: 8bit\n\n"
    "<p>Hello world</p>\n\n--sub1\nContent-Type: text/plain\n"
    "Content-Transfer-Encoding: ?invalid\n\nHello another world\n\n--sub1--\n"
    "Sub MIME epilogue\n\n--foo bar--\nRoot MIME epilogue\n"
)
DOVECOT_NESTED_BODYSTRUCTURE = (
    '(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>" '
    '"hellodescription" "7bit" 7 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("inline" ("foo" "bar")) '
    '("en" "fi" "se") "http://example.com/test.txt")("message" "rfc822" NIL NIL NIL "7bit" 412 '
    '("Sun, 12 Aug 2012 12:34:56 +0300" "submsg" ((NIL NIL "sub" "domain.org")) '
    '((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) '
    '((NIL NIL "sub-to1" "domain.org")(NIL NIL "sub-to2" "domain.org")) NIL NIL NIL NIL) '
    '(("text" "html" ("charset" "us-ascii") NIL NIL "8bit" 20 1 NIL NIL NIL NIL)'
    '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 21 1 NIL NIL NIL NIL) "alternative" '
    '("boundary" "sub1") NIL NIL NIL) 21 NIL NIL NIL NIL) "mixed" ("boundary" "foo bar") '
    "NIL NIL NIL)"
)

ATTACHED = crlf(
    "From: user@domain.org\nDate: Sat, 24 Mar 2017 23:00:00 +0200\nMime-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="foo bar"\n\n--foo bar\n'
    "Content-Type: text/plain; charset=us-ascii\n\nSee attached...\n\n--foo bar\n"
    "Content-Type: message/rfc822\n\nFrom: user@domain.org\n"
    "Date: Sat, 24 Mar 2017 23:00:00 +0200\nMime-Version: 1.0\n"
    "Content-Type: text/plain; charset=us-ascii\n\nbody\n\n--foo bar--\n\n"
)


@pytest.mark.parametrize(
    ("message", "expected_structure", "expected_body"),
    [
        (
            crlf(
                "From: user@domain.org\nDate: Sat, 24 Mar 2017 23:00:00 +0200\n"
                "Mime-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\nbody\n"
            ),
            '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)',
            '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1)',
        ),
        (
            ATTACHED,
            '(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 17 1 NIL NIL NIL NIL)'
            '("message" "rfc822" NIL NIL NIL "7bit" 133 ("Sat, 24 Mar 2017 23:00:00 +0200" NIL '
            '((NIL NIL "user" "domain.org")) ((NIL NIL "user" "domain.org")) '
            '((NIL NIL "user" "domain.org")) NIL NIL NIL NIL NIL) '
            '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL) 6 '
            'NIL NIL NIL NIL) "mixed" ("boundary" "foo bar") NIL NIL NIL)',
            '(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 17 1)("message" "rfc822" NIL '
            'NIL NIL "7bit" 133 ("Sat, 24 Mar 2017 23:00:00 +0200" NIL ((NIL NIL "user" '
            '"domain.org")) ((NIL NIL "user" "domain.org")) ((NIL NIL "user" "domain.org")) NIL '
            'NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1) 6) '
            '"mixed")',
        ),
        (DOVECOT_NESTED, DOVECOT_NESTED_BODYSTRUCTURE, None),
        (
            crlf('Content-Type: multipart/mixed; boundary="foo"\n\n'),
            '(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" '
            '("boundary" "foo") NIL NIL NIL)',
            '(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")',
        ),
        (
            crlf(
                'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: image/png\n'
                "Content-Transfer-Encoding: base64\n"
                'Content-Disposition: attachment; filename="p.png"\n'
                "\niVBORw0KGgo=\n--b--\n"
            ),
            '(("image" "png" NIL NIL NIL "base64" 12 NIL ("attachment" ("filename" "p.png")) '
            'NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL)',
            '(("image" "png" NIL NIL NIL "base64" 12) "mixed")',
        ),
    ],
)
def test_bodystructure_matches_dovecot(
    message: bytes, expected_structure: str, expected_body: str | None
) -> None:
    root = parse_message(message)
    assert encode(bodystructure(message, root, extended=True)).decode() == expected_structure
    if expected_body is not None:
        assert encode(bodystructure(message, root, extended=False)).decode() == expected_body


def section(
    message: bytes, path: tuple[int, ...] = (), kind: str = "", *fields: str
) -> bytes | None:
    return extract(message, parse_message(message), SectionSpec(path, kind, fields))


def test_sections_are_byte_exact_slices() -> None:
    msg = DOVECOT_NESTED
    assert section(msg) == msg
    header = section(msg, (), "HEADER")
    assert header is not None and header.endswith(b'bar"\r\n\r\n') and msg.startswith(header)
    assert section(msg, (), "TEXT") == msg[len(header) :]
    assert section(msg, (1,)) == b"hello\r\n"
    assert section(msg, (1,), "MIME") is not None
    assert section(msg, (1,), "MIME").startswith(b"Content-Type: text/x-myown")  # type: ignore[union-attr]
    assert section(msg, (1,), "MIME").endswith(b"test.txt\r\n\r\n")  # type: ignore[union-attr]
    inner = section(msg, (2,))
    assert inner is not None and inner.startswith(b"From: sub@domain.org\r\n")
    assert inner.endswith(
        b"Sub MIME epilogue\r\n"
    )  # the CRLF before "--foo bar--" is the delimiter's
    assert section(msg, (2,), "HEADER") == inner[: inner.index(b"\r\n\r\n") + 4]
    assert section(msg, (2,), "TEXT") == inner[inner.index(b"\r\n\r\n") + 4 :]
    assert section(msg, (2, 1)) == b"<p>Hello world</p>\r\n"
    assert section(msg, (2, 2)) == b"Hello another world\r\n"
    assert section(msg, (2, 2), "MIME") == (
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: ?invalid\r\n\r\n"
    )
    assert section(msg, (3,)) is None
    assert section(msg, (1, 1)) is None
    assert section(msg, (1,), "HEADER") is None  # not a message/rfc822 part


def test_header_fields_keep_original_bytes_and_order() -> None:
    msg = crlf("Subject: a\n  folded\nFrom: x@y\nTo: z@w\nsubject: again\n\nbody\n")
    assert section(msg, (), "HEADER.FIELDS", "subject") == crlf(
        "Subject: a\n  folded\nsubject: again\n\n"
    )
    assert section(msg, (), "HEADER.FIELDS.NOT", "subject", "to") == b"From: x@y\r\n\r\n"
    assert section(msg, (), "HEADER.FIELDS", "x-none") == b"\r\n"


def test_single_part_body_is_part_one() -> None:
    msg = crlf("Subject: s\n\nline 1\nline 2\n")
    assert section(msg, (1,)) == b"line 1\r\nline 2\r\n"
    assert section(msg, (2,)) is None


def test_bare_lf_message_is_parsed() -> None:
    msg = b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nfirst\n--b\n\nsecond\n--b--\n'
    assert section(msg, (1,)) == b"first"
    assert section(msg, (2,)) == b"second"


def test_boundary_prefix_of_another_is_not_a_delimiter() -> None:
    msg = crlf(
        'Content-Type: multipart/mixed; boundary="b"\n\n--b\n'
        'Content-Type: multipart/alternative; boundary="b-inner"\n\n--b-inner\n\nA\n--b-inner--\n'
        "--b\n\nB\n--b--\n"
    )
    assert section(msg, (1, 1)) == b"A"
    assert section(msg, (2,)) == b"B"


def test_envelope_addresses_groups_and_defaults() -> None:
    msg = crlf(
        "Date: Mon, 3 Mar 2025 10:00:00 +0100\n"
        "Subject: =?utf-8?q?Conclusions_d=C3=A9fendeur?=\n"
        'From: "Dupont, Jean" <jean.dupont@avocats.test>\n'
        "To: greffe@cph-bordeaux.justice.test, Undisclosed: ;, x@y.test (Comment Name)\n"
        "Message-ID: <abc@avocats.test>\n\nbody\n"
    )
    env = encode(envelope(header_fields(msg))).decode()
    assert env == (
        '("Mon, 3 Mar 2025 10:00:00 +0100" "=?utf-8?q?Conclusions_d=C3=A9fendeur?=" '
        '(("Dupont, Jean" NIL "jean.dupont" "avocats.test")) '
        '(("Dupont, Jean" NIL "jean.dupont" "avocats.test")) '
        '(("Dupont, Jean" NIL "jean.dupont" "avocats.test")) '
        '((NIL NIL "greffe" "cph-bordeaux.justice.test")(NIL NIL "Undisclosed" NIL)'
        '(NIL NIL NIL NIL)("Comment Name" NIL "x" "y.test")) NIL NIL NIL "<abc@avocats.test>")'
    )


def test_addresses_with_route_and_quoted_local_part() -> None:
    parsed = parse_addresses(b'<@relay.test:"a b"@x.test>')
    assert parsed == [[None, b"@relay.test", b'"a b"', b"x.test"]]


def test_eight_bit_header_goes_as_literal_unless_utf8() -> None:
    msg = "Subject: Réponse\r\n\r\n".encode()
    env = envelope(header_fields(msg))
    assert encode(env).startswith(b"(NIL {8}\r\nR\xc3\xa9ponse")
    assert encode(env, utf8=True).startswith('(NIL "Réponse"'.encode())


def test_deep_nesting_does_not_blow_the_stack() -> None:
    msg = b""
    for _ in range(500):
        msg = b"Content-Type: message/rfc822\r\n\r\n" + msg
    root = parse_message(msg + b"Subject: x\r\n\r\nend\r\n")
    bodystructure(msg, root, extended=True)
