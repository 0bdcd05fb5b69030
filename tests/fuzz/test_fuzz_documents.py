"""Any message bytes: the structured-document check refuses (InvalidMessage) or lets through.

And the cheap look never misses a document the parse would check: when
``may_carry_documents`` says no, the message has no document part.
"""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import Message

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palais.mailbox.documents import may_carry_documents, message_errors, refuse_invalid
from palais.mailbox.errors import InvalidMessage
from tests.fuzz.budget import FUZZ, TEST_TIMEOUT

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

PIECES = [
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b'Content-Type: multipart/mixed; boundary="c d"\r\n',
    b"Content-Type: MULTIPART/Related; BOUNDARY=b\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: application/vnd.palais.saisine+json\r\n",
    b"Content-Type: Application/VND.Palais.Constitution+JSON; charset=utf-8\r\n",
    b"Content-Type:\r\n application/vnd.palais.hearing-slots+json\r\n",
    b"Content-Type: application/vnd.palais.inconnu+json\r\n",
    b"Content-Type: application/pdf; name=a.pdf\r\n",
    b'Content-Disposition: attachment; filename="projet-assignation.pdf"\r\n',
    b"Content-Transfer-Encoding: base64\r\n",
    b"Subject: x\r\n",
    b"\r\n",
    b"\n",
    b"--b\r\n",
    b"--b--\r\n",
    b"--c d\r\n",
    b'{"juridiction": {"type": "CPH"}, "actors": [{"person_type": "physique"}]}',
    b"e30=\r\n",
    b"%PDF-1.4\r\n",
    b"[[[[[[[[",
]

messages = st.lists(st.sampled_from(PIECES) | st.binary(max_size=20), max_size=30).map(b"".join)


def _document_parts(message: Message) -> Iterator[str]:
    """Media types of the message's own leaf parts (not inside a forwarded message)."""
    if message.get_content_maintype() == "message":
        return
    if not message.is_multipart():
        yield message.get_content_type()
        return
    for part in message.get_payload():
        if isinstance(part, Message) and part.get_content_maintype() != "message":
            yield from _document_parts(part)


def _has_document(data: bytes) -> bool:
    parsed = message_from_bytes(data, policy=policy.compat32)
    return any(t.startswith("application/vnd.palais.") for t in _document_parts(parsed))


@FUZZ
@given(messages)
def test_any_message_is_refused_or_let_through(data: bytes) -> None:
    try:
        refuse_invalid(data, {})
    except InvalidMessage as error:
        assert error.details and all(isinstance(d, str) for d in error.details)


@FUZZ
@given(messages)
def test_the_cheap_look_misses_no_document(data: bytes) -> None:
    if not may_carry_documents(data):
        assert not _has_document(data)
    elif not _has_document(data):
        assert message_errors(data, {}) == []
