"""Content rules of a submitted message, in the domain (no sockets, a recording filer)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from palais.mailbox.errors import ErrorKind, InvalidMessage
from palais.mailbox.identity import Identity, Role
from palais.mailbox.message import MessageSummary, normalize_line_endings, summarize
from palais.mailbox.routing import Addressee, AddresseeKind, FilingPlan
from palais.mailbox.submission import Accepted, SubmissionDesk, resend_since

NUMBER = "2025-0000138"
ME = Identity(1, "avocat@x.test", Role.AVOCAT, "Avocat", "f" * 64, "avocat@x.test")
DOSSIER = Addressee("d@x.test", AddresseeKind.DOSSIER, "greffe@x.test", dossier=NUMBER)

CLEAN = (
    b"From: avocat@x.test\r\n"
    b"To: d@x.test\r\n"
    b"Subject: [2025-0000138] Conclusions\r\n"
    b"Message-ID: <m1@x.test>\r\n"
    b"\r\n"
    b"Corps\r\n"
)


class Book:
    async def resolve(self, address: str) -> Addressee | None:
        return DOSSIER if address == DOSSIER.address else None

    async def participants(self, number: str) -> frozenset[str]:
        return frozenset({ME.address, "greffe@x.test"}) if number == NUMBER else frozenset()


@dataclass(frozen=True)
class Filing:
    message_id: int
    sha256: str
    resent: bool = False


@dataclass
class RecordingFiler:
    """Files nothing; remembers what it was handed and answers like a store."""

    calls: list[tuple[bytes, MessageSummary, datetime | None]] = field(default_factory=list)
    resent: bool = False

    async def file(
        self,
        who: Identity,
        data: bytes,
        summary: MessageSummary,
        plan: FilingPlan,
        *,
        resend_since: datetime | None = None,
        arrival: str | None = None,
    ) -> Filing:
        self.calls.append((data, summary, resend_since))
        return Filing(7, hashlib.sha256(data).hexdigest(), self.resent)


def accept(data: bytes, *, window: float = 3600.0, filer: RecordingFiler | None = None) -> Accepted:
    desk = SubmissionDesk(Book(), filer or RecordingFiler(), max_size=1 << 20, resend_window=window)

    async def submit() -> Accepted:
        submission = desk.submission(ME, ME.address)
        await submission.add_recipient(DOSSIER.address)
        return await submission.accept(data)

    return asyncio.run(submit())


# -- line endings ---------------------------------------------------------------


def test_bare_lf_becomes_crlf() -> None:
    assert normalize_line_endings(b"A: b\nC: d\n\nbody\n") == b"A: b\r\nC: d\r\n\r\nbody\r\n"
    assert normalize_line_endings(b"A: b\r\nC: d\n\r\nx\n") == b"A: b\r\nC: d\r\n\r\nx\r\n"


def test_crlf_message_is_kept_as_it_is() -> None:
    assert normalize_line_endings(CLEAN) is CLEAN


def test_submission_stores_crlf_and_reports_the_stored_sha() -> None:
    filer = RecordingFiler()
    bare = CLEAN.replace(b"\r\n", b"\n")
    accepted = accept(bare, filer=filer)
    stored = filer.calls[0][0]
    assert stored == CLEAN
    assert accepted.sha256 == hashlib.sha256(stored).hexdigest()
    assert accepted.size == len(stored)


def test_subject_prefix_added_after_normalisation_is_in_the_stored_sha() -> None:
    filer = RecordingFiler()
    data = CLEAN.replace(b"[2025-0000138] Conclusions", b"Conclusions").replace(b"\r\n", b"\n")
    accepted = accept(data, filer=filer)
    stored = filer.calls[0][0]
    assert b"\r\nSubject: [2025-0000138] Conclusions\r\n" in stored
    assert b"\n" not in stored.replace(b"\r\n", b"")
    assert accepted.sha256 == hashlib.sha256(stored).hexdigest()


# -- header block -----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        CLEAN.replace(b"Conclusions", b"Concl\x00usions"),
        CLEAN.replace(b"From: avocat@x.test", b"From: avocat@x.test\rX-Evil: 1"),
        CLEAN.replace(b"Conclusions\r\n", b"Conclusions\r\r\n"),
        CLEAN.replace(b"Message-ID:", b"Subject: [2025-0000999] autre\r\nMessage-ID:"),
        CLEAN.replace(b"From:", b"subject: second\r\nFrom:"),
    ],
    ids=["nul", "bare-cr", "cr-before-crlf", "two-subjects", "two-subjects-any-case"],
)
def test_submitted_header_refused(bad: bytes) -> None:
    with pytest.raises(InvalidMessage) as refused:
        summarize(bad, submitted=True)
    assert refused.value.kind is ErrorKind.INVALID_MESSAGE
    filer = RecordingFiler()
    with pytest.raises(InvalidMessage):
        accept(bad, filer=filer)
    assert filer.calls == []  # nothing reaches the store


def test_header_rules_do_not_look_at_the_body() -> None:
    data = CLEAN.replace(b"Corps\r\n", b"Corps\x00\rSubject: x\r\n")
    assert summarize(data, submitted=True).subject == "[2025-0000138] Conclusions"


def test_stored_drafts_are_still_indexed_leniently() -> None:
    two = CLEAN.replace(b"From:", b"Subject: second\r\nFrom:")
    assert summarize(two).subject == "second"


# -- resends ------------------------------------------------------------------------


def test_resend_window_reaches_the_filer() -> None:
    filer = RecordingFiler()
    before = datetime.now(UTC)
    accept(CLEAN, window=600.0, filer=filer)
    since = filer.calls[0][2]
    assert since is not None
    assert before - timedelta(seconds=600) <= since <= datetime.now(UTC) - timedelta(seconds=600)


def test_no_resend_check_without_window_or_message_id() -> None:
    filer = RecordingFiler()
    accept(CLEAN, window=0, filer=filer)
    accept(CLEAN.replace(b"Message-ID: <m1@x.test>\r\n", b""), filer=filer)
    assert [since for _, _, since in filer.calls] == [None, None]


def test_resend_answered_with_the_first_reference() -> None:
    accepted = accept(CLEAN, filer=RecordingFiler(resent=True))
    assert accepted.resent and accepted.reference == "M7"


def test_resend_since_rule() -> None:
    summary = summarize(CLEAN)
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert resend_since(summary, now, 86400) == now - timedelta(days=1)
    assert resend_since(summary, now, 0) is None
    assert resend_since(summarize(CLEAN.replace(b"<m1@x.test>", b"")), now, 60) is None


def test_an_oversized_header_is_refused_before_it_is_read() -> None:
    # Deeply nested comments cost seconds of parsing per megabyte: refused
    # on size alone, quickly, with the limit in the text.
    head = b"From: " + b"(" * 200_000 + b"\r\nSubject: [2025-0000138] x\r\n\r\nCorps\r\n"
    with pytest.raises(InvalidMessage) as refused:
        summarize(head, submitted=True)
    assert refused.value.kind is ErrorKind.INVALID_MESSAGE
    assert refused.value.text == "The header is larger than 100 KiB"


def test_a_large_but_reasonable_header_is_accepted() -> None:
    received = b"".join(b"Received: from relay%d.x.test by x.test\r\n" % i for i in range(1000))
    summary = summarize(received + CLEAN, submitted=True)
    assert summary.subject == "[2025-0000138] Conclusions"
