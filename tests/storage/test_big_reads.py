"""Reading a big message leaves the event loop to others while its checksum is computed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection

from palais.mailbox.boxes import BoxKind
from palais.mailbox.identity import Identity, Role
from palais.storage import Storage, open_storage
from palais.storage.blobs import BlobCorrupted, sha256_hex
from palais.storage.bulk import import_messages
from palais.storage.directory import Directory
from palais.storage.writer import WriteContext

OWNER = "a@x.test"
BIG = (
    b"From: a@x.test\r\nSubject: pieces\r\n\r\n"
    + b"Conclusions en r\xc3\xa9ponse, pi\xc3\xa8ce jointe.\r\n" * 80_000
)
SMALL = b"From: a@x.test\r\nSubject: mot\r\n\r\ncorps\r\n"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    st = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "blobs")

    def setup(conn: Connection, _ctx: WriteContext) -> None:
        Directory.add_account(conn, address=OWNER, role=Role.AVOCAT, display_name="A")

    st.commits.run_now(setup)
    import_messages(
        st, owner=OWNER, kind=BoxKind.RECUS, dossier=None, messages=[BIG, SMALL], sender=OWNER
    )
    st.start()
    try:
        yield st
    finally:
        st.close()


def test_a_big_message_is_checked_off_the_loop(storage: Storage) -> None:
    assert len(BIG) > 2 * 1024 * 1024

    async def go() -> list[str]:
        order: list[str] = []

        async def read(blob: str, name: str) -> None:
            assert await storage.mail.read(blob) in (BIG, SMALL)
            order.append(name)

        async def other() -> None:
            order.append("other")

        await asyncio.gather(read(sha256_hex(BIG), "big"), other())
        await asyncio.gather(read(sha256_hex(SMALL), "small"), other())
        return order

    # The big read lets the other task run first; a small one is done at once.
    assert asyncio.run(go()) == ["other", "big", "small", "other"]


def test_a_damaged_big_message_is_refused(storage: Storage, tmp_path: Path) -> None:
    segment = next((tmp_path / "blobs").glob("*.pack"))
    data = bytearray(segment.read_bytes())
    at = data.find(b"pi\xc3\xa8ce jointe", 1024 * 1024)
    data[at] ^= 0x20
    segment.write_bytes(bytes(data))
    with pytest.raises(BlobCorrupted):
        asyncio.run(storage.mail.read(sha256_hex(BIG)))


def test_a_box_read_whole_is_read_off_the_loop(storage: Storage) -> None:
    who = Identity(1, OWNER, Role.AVOCAT, "A", "f" * 64, OWNER)

    async def go() -> list[str]:
        order: list[str] = []
        info = await storage.mail.mailbox(who, "INBOX")

        async def entries(name: str) -> None:
            table = await storage.mail.entries(who, info.id)
            assert list(table.uids) == [1, 2]
            order.append(name)

        async def other() -> None:
            order.append("other")

        await asyncio.gather(entries("first"), other())
        await asyncio.gather(entries("kept"), other())  # the kept table: at once
        return order

    assert asyncio.run(go()) == ["other", "first", "kept", "other"]
