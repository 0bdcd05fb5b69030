"""Mailbox names and LIST options as the RFCs write them (issue "Protocol fidelity")."""

from __future__ import annotations

import pytest

from tests.imap.conftest import RawClient

# Every ATOM-CHAR that is not a letter or a digit (RFC 3501 section 9).
ODD_ATOM = b"!#$&'+,-.:;<=>?@^_|}~`/"


@pytest.mark.parametrize("name", [ODD_ATOM, b"a&b", b"Envoy&AOk", b'"Envoy&AOk"', b"x]"])
def test_select_of_a_valid_name_that_does_not_exist_is_no_nonexistent(
    raw: RawClient, name: bytes
) -> None:
    raw.login()
    reply = raw.cmd(b"a", b"SELECT " + name)
    assert reply[-1].startswith(b"a NO [NONEXISTENT]"), reply
    assert raw.cmd(b"b", b"STATUS " + name + b" (MESSAGES)")[-1].startswith(b"b NO [NONEXISTENT]")


@pytest.mark.parametrize("pattern", [ODD_ATOM, ODD_ATOM + b"%", b"*&", b"a&b*"])
def test_list_of_a_valid_pattern_that_matches_nothing_is_an_empty_ok(
    raw: RawClient, pattern: bytes
) -> None:
    raw.login()
    assert raw.cmd(b"a", b'LIST "" ' + pattern) == [b"a OK LIST completed\r\n"]
    assert raw.cmd(b"b", b"LIST " + ODD_ATOM + b" " + pattern) == [b"b OK LIST completed\r\n"]


def test_the_real_names_still_decode(raw: RawClient) -> None:
    raw.login()
    assert raw.cmd(b"a", b"SELECT Envoy&AOk-s")[-1].startswith(b"a OK")
    assert raw.cmd(b"b", b'LIST "" Envoy&AOk-s')[0].endswith(b'"Envoy&AOk-s"\r\n')


@pytest.mark.parametrize("options", [b"RECURSIVEMATCH", b"RECURSIVEMATCH REMOTE"])
def test_recursivematch_alone_is_bad(raw: RawClient, options: bytes) -> None:
    raw.login()
    for pattern in (b'""', b'"*"'):
        reply = raw.cmd(b"a", b"LIST (" + options + b') "" ' + pattern)
        assert reply == [b"a BAD LIST: RECURSIVEMATCH needs another selection option\r\n"], reply


def test_recursivematch_with_subscribed_is_accepted(raw: RawClient) -> None:
    raw.login()
    reply = raw.cmd(b"a", b'LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"')
    assert reply[-1] == b"a OK LIST completed\r\n"
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"\r\n' in reply
