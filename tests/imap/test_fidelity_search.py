"""SEARCH as the RFCs write it (issue "Protocol fidelity"): ESEARCH MODSEQ,
SENT* dates, group names in address keys."""

from __future__ import annotations

import re

import pytest

from tests.imap.conftest import RawClient, ServerThread
from tests.imap.fake_store import FakeStore


def _message(n: int) -> bytes:
    return (
        f"From: a@b.test\r\nTo: x@y.test\r\nSubject: m{n}\r\n"
        f"Date: Mon, 3 Mar 2025 10:00:00 +0100\r\n\r\nbody\r\n"
    ).encode()


@pytest.fixture
def three(server: ServerThread, store: FakeStore, raw: RawClient) -> dict[int, int]:
    """INBOX with three messages, the middle one changed last: uid -> MODSEQ."""
    for n in (1, 2, 3):
        server.run(store.deliver, "INBOX", _message(n))
    raw.login()
    raw.cmd(b"s", b"SELECT INBOX")
    raw.cmd(b"f", b"UID STORE 2 +FLAGS.SILENT (\\Flagged)")
    lines = raw.cmd(b"m", b"UID FETCH 1:3 (MODSEQ)")
    found = [re.search(rb"UID (\d+) MODSEQ \((\d+)\)", x) for x in lines[:-1]]
    modseqs = {int(m.group(1)): int(m.group(2)) for m in found if m}
    assert modseqs[2] > max(modseqs[1], modseqs[3])
    return modseqs


@pytest.mark.parametrize(
    ("returns", "uids"),
    [
        (b"MIN", (1,)),
        (b"MAX", (3,)),
        (b"MIN MAX", (1, 3)),
        (b"MIN COUNT", (1, 2, 3)),
        (b"ALL", (1, 2, 3)),
        (b"", (1, 2, 3)),
    ],
)
def test_esearch_modseq_is_that_of_the_messages_returned(
    raw: RawClient, three: dict[int, int], returns: bytes, uids: tuple[int, ...]
) -> None:
    for verb in (b"SEARCH", b"UID SEARCH"):
        lines = raw.cmd(b"a", verb + b" RETURN (" + returns + b") MODSEQ 1")
        assert lines[-1].startswith(b"a OK"), lines
        found = re.search(rb" MODSEQ (\d+)\r\n$", lines[0])
        assert found is not None, lines[0]
        assert int(found.group(1)) == max(three[u] for u in uids), (verb, returns, lines[0])


def test_classic_search_modseq_is_the_highest_of_all(raw: RawClient, three: dict[int, int]) -> None:
    lines = raw.cmd(b"a", b"SEARCH MODSEQ 1")
    assert lines[0] == b"* SEARCH 1 2 3 (MODSEQ %d)\r\n" % three[2]
