"""A registry decision on a lawyer's message carried out, on SQLite and
PostgreSQL: the decided message found by its Message-ID with its dossier and
its sender's role; the decision mail filed with the acceptation-greffe or
rejet-greffe receipt to the lawyer in one transaction; sent again, filed once."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from palais.mailbox.errors import InvalidMessage
from palais.mailbox.evidence import EventCode
from palais.mailbox.message import summarize
from palais.mailbox.message_decisions import DossierMessage, MessageDecided
from palais.mailbox.model import BoxKind
from palais.mailbox.routing import Destination, FilingPlan
from palais.storage import Storage
from palais.storage.registry import RegistryStore
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage import test_receipts
from tests.storage.test_mailstore import GREFFE, ME, NUMBER, msg
from tests.storage.test_receipts import CLERK, _file, _log, _rows

# The evidence-keeping store of the receipts' tests (pytest finds fixtures by name).
pki, key, store = test_receipts.pki, test_receipts.key, test_receipts.store


def _decision_mail(n: int) -> bytes:
    return (
        f"From: {CLERK.address}\r\nSubject: [{NUMBER}] décision\r\n"
        f"Message-ID: <decision-{n}@x>\r\n\r\nVu.\r\n"
    ).encode()


def _send(store: Storage, data: bytes, record: MessageDecided) -> bool:
    """The clerk's decision mail filed in the dossier with its record; resent?"""
    plan = FilingPlan(
        NUMBER,
        (
            Destination(GREFFE, BoxKind.ENVOYES, frozenset({"\\Seen"})),
            Destination(ME.address, BoxKind.RECUS),
        ),
        records=(record,),
    )
    since = datetime.now(UTC) - timedelta(hours=1)
    filed = asyncio.run(store.mail.file(CLERK, data, summarize(data), plan, resend_since=since))
    return filed.resent


def test_a_decision_on_a_message_files_its_receipt(store: Storage) -> None:
    registry = RegistryStore(store.reader, store.commits, store.mail)
    store.mail.add_record_writer(MessageDecided, registry.write_message_decided)
    filed = _file(store, msg(1))
    found = asyncio.run(registry.messages_with_id("1@x"))
    assert found == [DossierMessage(filed.message_id, ME.address, "avocat", NUMBER)]
    assert asyncio.run(registry.messages_with_id("<1@x>")) == found
    assert asyncio.run(registry.messages_with_id("<nothing@x>")) == []

    accepted = MessageDecided(CLERK, filed.message_id, True, None)
    assert not _send(store, _decision_mail(1), accepted)
    assert _send(store, _decision_mail(1), accepted)  # the same again: filed once
    (decided,) = asyncio.run(registry.messages_with_id("<1@x>"))
    assert decided.decided  # its receipt issued: a further decision is refused
    sha = hashlib.sha256(_decision_mail(1)).hexdigest()
    assert asyncio.run(registry.decision_filed(CLERK.address, "<decision-1@x>", sha))
    rejected = MessageDecided(CLERK, filed.message_id, False, "pièce illisible")
    assert not _send(store, _decision_mail(2), rejected)
    # A rejection without its reason: neither the receipt nor the mail.
    with pytest.raises(InvalidMessage):
        _send(store, _decision_mail(3), MessageDecided(CLERK, filed.message_id, False, None))

    codes = [[e["code"] for e in d["events"]] for d in _log(store)]
    assert codes == [
        ["depot", "remise"],
        [EventCode.ACCEPTATION_GREFFE.value],
        [EventCode.REJET_GREFFE.value],
    ]
    assert _log(store)[2]["events"][0]["reason"] == "pièce illisible"
    assert _rows(store, "SELECT DISTINCT holder FROM evidence_log") == [(ME.address,)]
    decisions = _rows(store, "SELECT message_id FROM message WHERE message_id LIKE '<decision-%'")
    assert sorted(decisions) == [("<decision-1@x>",), ("<decision-2@x>",)]
