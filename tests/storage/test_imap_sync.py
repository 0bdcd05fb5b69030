"""What the IMAP sync extensions read from the store (migration 0010): the UIDs
that left a box since a MODSEQ, in both views of a placement, and a box's size."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import text

from palais.mailbox.errors import CannotDoThat
from palais.mailbox.identity import Identity, Role
from palais.mailbox.model import FlagMode
from palais.storage import Storage
from palais.storage.engine import make_engine
from palais.storage.migrate import alembic_config, upgrade
from tests.postgres_server import (  # noqa: F401  fixtures
    postgres_server_fixture,
    postgres_url_fixture,
)
from tests.storage.test_mailstore import GREFFE, ME, NUMBER, _send, msg, run

CLERK = Identity(3, "clerk@x.test", Role.GREFFIER, "C", "d" * 64, GREFFE)
DELETED = frozenset({"\\Deleted"})


def test_vanished_follows_expunge_and_move_in_both_views(storage: Storage) -> None:
    for n in range(1, 5):
        _send(storage, n)

    async def go() -> None:
        mail = storage.mail
        inbox = await mail.mailbox(CLERK, "INBOX")
        dossier = await mail.mailbox(CLERK, f"Dossiers/{NUMBER}/Reçus")
        since = inbox.highestmodseq
        assert await mail.vanished(CLERK, inbox.id, 0) == []
        await mail.store_flags(CLERK, inbox.id, [2, 3], FlagMode.ADD, DELETED)
        assert await mail.expunge(CLERK, inbox.id, [2]) == [2]
        moved = await mail.move(CLERK, inbox.id, [4], "Supprimés")
        assert moved.source_uids == [4]
        assert await mail.vanished(CLERK, inbox.id, since) == [2, 4]
        # The placement's other view lost the same messages (its own UIDs there).
        assert await mail.vanished(CLERK, dossier.id, dossier.highestmodseq) == [2, 4]
        # Only what left after the MODSEQ asked about.
        after = (await mail.mailbox(CLERK, "INBOX")).highestmodseq
        assert await mail.vanished(CLERK, inbox.id, after) == []
        assert await mail.expunge(CLERK, inbox.id) == [3]
        assert await mail.vanished(CLERK, inbox.id, after) == [3]
        # Nobody else's box.
        other = await mail.mailbox(ME, "Envoyés")
        try:
            await mail.vanished(CLERK, other.id, 0)
        except Exception as exc:
            assert type(exc).__name__ == "NoSuchMailbox"
        else:
            raise AssertionError("another owner's box answered")

    run(go())


def test_box_size_sums_the_messages(storage: Storage) -> None:
    async def go() -> None:
        mail = storage.mail
        box = await mail.mailbox(ME, "Brouillons")
        assert await mail.box_size(ME, box.id) == 0
        await mail.append(ME, "Brouillons", msg(1), frozenset(), None)
        await mail.append(ME, "Brouillons", msg(2, "longer body"), frozenset(), None)
        assert await mail.box_size(ME, box.id) == len(msg(1)) + len(msg(2, "longer body"))

    run(go())


def test_append_to_supprimes_of_a_held_message_is_its_delete(storage: Storage) -> None:
    """mbsync's move to the trash: APPEND to Supprimés, \\Deleted and EXPUNGE in the source."""
    _send(storage, 1)

    async def go() -> None:
        mail = storage.mail
        inbox = await mail.mailbox(CLERK, "INBOX")
        (record,) = await mail.records(CLERK, inbox.id, [1])
        data = await mail.read(record.blob)
        result = await mail.append(CLERK, "Supprimés", data, frozenset({"\\Seen"}), None)
        trash = await mail.mailbox(CLERK, "Supprimés")
        assert result.uidvalidity == trash.uidvalidity and trash.messages == 1
        # The same APPEND again (a retried sync) answers with the same entry.
        again = await mail.append(CLERK, "Supprimés", data, frozenset(), None)
        assert again.uid == result.uid
        assert (await mail.mailbox(CLERK, "Supprimés")).messages == 1
        await mail.store_flags(CLERK, inbox.id, [1], FlagMode.ADD, DELETED)
        assert await mail.expunge(CLERK, inbox.id) == [1]
        # Deleted once: in Supprimés (both views), no longer in Reçus.
        assert (await mail.mailbox(CLERK, "INBOX")).messages == 0
        assert (await mail.mailbox(CLERK, "Supprimés")).messages == 1
        assert (await mail.mailbox(CLERK, f"Dossiers/{NUMBER}/Supprimés")).messages == 1
        # It can be restored to where it came from, like any deleted message.
        back = await mail.move(CLERK, trash.id, [result.uid], "INBOX")
        assert back.dest_uids

    run(go())


def test_append_to_supprimes_of_an_unknown_message_is_refused(storage: Storage) -> None:
    async def go() -> None:
        try:
            await storage.mail.append(ME, "Supprimés", msg(99), frozenset(), None)
        except CannotDoThat as exc:
            assert "not in your mailbox" in exc.text
        else:
            raise AssertionError("an unknown message entered Supprimés")
        assert (await storage.mail.mailbox(ME, "Supprimés")).messages == 0

    run(go())


def test_append_all_keeps_every_message_or_none(storage: Storage) -> None:
    _send(storage, 1)
    plain = frozenset[str]()

    async def go() -> None:
        mail = storage.mail
        drafts = await mail.append_all(
            ME, "Brouillons", [(msg(10), frozenset({"\\Draft"}), None), (msg(11), plain, None)]
        )
        assert [r.uid for r in drafts] == [1, 2]
        assert (await mail.mailbox(ME, "Brouillons")).messages == 2
        # The client's sent copies are answered with the gateway's own.
        sent = await mail.append_all(ME, "Envoyés", [(msg(1), plain, None)] * 2)
        assert [r.uid for r in sent] == [1, 1]
        # A delete by APPEND (a write) then an unknown message: refused whole,
        # the delete undone with it.
        inbox = await mail.mailbox(CLERK, "INBOX")
        (record,) = await mail.records(CLERK, inbox.id, [1])
        held = await mail.read(record.blob)
        try:
            await mail.append_all(CLERK, "Supprimés", [(held, plain, None), (msg(99), plain, None)])
        except CannotDoThat:
            pass
        else:
            raise AssertionError("an unknown message entered Supprimés")
        assert (await mail.mailbox(CLERK, "Supprimés")).messages == 0
        done = await mail.append_all(CLERK, "Supprimés", [(held, plain, None)])
        assert len(done) == 1 and (await mail.mailbox(CLERK, "Supprimés")).messages == 1

    run(go())


def test_recent_mark_is_claimed_once(storage: Storage) -> None:
    _send(storage, 1)
    _send(storage, 2)

    async def go() -> None:
        mail = storage.mail
        inbox = await mail.mailbox(CLERK, "INBOX")
        assert await mail.recent_mark(CLERK, inbox.id) == 0  # never selected: all recent
        assert await mail.claim_recent(CLERK, inbox.id, 2) == 0  # the first claims 1..2
        assert await mail.claim_recent(CLERK, inbox.id, 2) == 2  # the next, nothing
        assert await mail.claim_recent(CLERK, inbox.id, 1) == 2  # never goes back
        assert await mail.recent_mark(CLERK, inbox.id) == 2
        other = await mail.mailbox(ME, "Envoyés")
        try:
            await mail.claim_recent(CLERK, other.id, 5)
        except Exception as exc:
            assert type(exc).__name__ == "NoSuchMailbox"
        else:
            raise AssertionError("another owner's box was claimed")

    run(go())


def test_migration_0010_starts_existing_boxes_with_nothing_recent(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite'}", writer=True)
    cfg = alembic_config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0009")
            conn.execute(
                text(
                    "INSERT INTO mailbox (owner, name, kind, uidvalidity, uidnext, highestmodseq)"
                    " VALUES ('a@x.test', 'INBOX', 'recus', 1, 5, 9)"
                )
            )
        upgrade(engine)  # to the head, through 0010
        with engine.connect() as conn:
            assert conn.execute(text("SELECT mailbox_id, uid FROM imap_recent")).all() == [(1, 4)]
            assert conn.execute(text("SELECT count(*) FROM vanished")).scalar_one() == 0
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0009")
        with engine.connect() as conn:
            tables = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
        assert not {"imap_recent", "vanished"} & tables
    finally:
        engine.dispose()
