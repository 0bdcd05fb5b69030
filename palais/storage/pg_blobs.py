"""Message bytes in PostgreSQL large objects: what several nodes on one database share.

With the pack store (``blobs.BlobStore``) the bytes of a message lie in a
file of the node that took it in, which no other node can read. On
PostgreSQL the bytes go to the database too, as large objects: the ``blob``
row names segment ``PG_SEGMENT`` and the object's OID as its offset, so the
schema is the one the pack store uses and any node reads any message.

Large objects rather than a bytea table: no schema change (they live in the
system catalogue ``pg_largeobject``), the same speed as bytea rows when
measured here (4 KiB: about 2,950 written/s against 2,480; whole reads and
2 KiB header reads within 5 % of each other; 1 MiB within noise), reads of a
prefix (``lo_get(oid, 0, n)``) without detoasting the whole value, and no
1 GB ceiling. What they do not do: logical replication does not carry them
(physical streaming replication, the read-replica layout, does).

The port's contract is kept as the pack's: ``append_many`` writes the bytes
in a transaction of their own on a dedicated connection, ``sync`` commits it
(the writer waits for that before committing the rows that point at them),
so no row ever names bytes that are not durable. Bytes whose rows were then
rolled back are left unreferenced, as in the pack; ``palais.storage.blob_sweep``
unlinks them once no blob row has named them for a grace period (every
object is unnamed for a moment, between its commit and its rows').
``erase`` unlinks the object; PostgreSQL reclaims its pages at the next VACUUM.

Locations in a pack segment (an instance that ran on PostgreSQL with the
pack store before) are still read from the node's blob directory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from palais.mailbox.ports import BlobCorrupted, BlobLocation
from palais.storage.blobs import BlobStore, sha256_hex

__all__ = ["PG_SEGMENT", "PgBlobStore"]

PG_SEGMENT = "pg-lo"
log = logging.getLogger("palais.storage.pg_blobs")


class PgBlobStore:
    """``palais.mailbox.ports.MessageBytes`` in PostgreSQL large objects."""

    # Reads are network round trips: callers on an event loop hand them to a thread.
    local = False

    def __init__(self, writer: Engine, reader: Engine, legacy: Path | None = None) -> None:
        self._writer = writer
        self._reader = reader
        self._legacy_root = legacy
        self._legacy: BlobStore | None = None
        self._lock = threading.Lock()
        self._pending: Any = None  # the pool connection whose transaction holds unsynced bytes

    def append(self, data: bytes) -> BlobLocation:
        return self.append_many([data])[0]

    def append_many(self, datas: Sequence[bytes]) -> list[BlobLocation]:
        """Create one large object per blob in one statement (not durable before ``sync``)."""
        if not datas:
            return []
        with self._lock:
            if self._pending is None:
                self._pending = self._writer.raw_connection()
            cur = self._pending.cursor()
            try:
                # WITH ORDINALITY: the OIDs come back in the order of the blobs.
                # %b: the array goes in binary; psycopg sends a list of bytes
                # as hex text otherwise (twice the bytes, encoded here and
                # decoded by the server: 1.85 ms against 0.55 for 8 x 4 KiB).
                cur.execute(
                    "SELECT lo_from_bytea(0, d) FROM unnest(%b::bytea[]) WITH ORDINALITY"
                    " AS u(d, o) ORDER BY o",
                    (list(datas),),
                )
                oids = [int(row[0]) for row in cur.fetchall()]
            except BaseException:
                self._drop_pending()
                raise
            finally:
                cur.close()
        return [
            BlobLocation(PG_SEGMENT, oid, len(data)) for oid, data in zip(oids, datas, strict=True)
        ]

    def _drop_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.rollback()
            finally:
                pending.close()

    def sync(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is None:
                return
            try:
                pending.commit()
            finally:
                pending.close()

    def read(self, where: BlobLocation, sha256: str, *, length: int | None = None) -> bytes:
        """A blob's bytes (or its first ``length``, then unchecked)."""
        if where.segment != PG_SEGMENT:
            return self._pack().read(where, sha256, length=length)
        want = where.length if length is None else min(length, where.length)
        raw = self._reader.raw_connection()
        try:
            cur = raw.cursor()
            try:
                if want == where.length:
                    cur.execute("SELECT lo_get(%s)", (where.offset,))
                else:
                    cur.execute("SELECT lo_get(%s, 0, %s)", (where.offset, want))
                row = cur.fetchone()
            except Exception as error:  # the object is gone (erased since it was located)
                raw.rollback()
                raise BlobCorrupted(f"large object {where.offset} unreadable") from error
            finally:
                cur.close()
        finally:
            raw.close()
        data = bytes(row[0]) if row is not None and row[0] is not None else b""
        if len(data) != want:
            raise BlobCorrupted(f"short read for {sha256}")
        if length is None and sha256_hex(data) != sha256:
            raise BlobCorrupted(f"checksum mismatch for {sha256}")
        return data

    def erase(self, where: BlobLocation) -> None:
        """Unlink the object (in its own committed transaction); never raises."""
        if where.segment != PG_SEGMENT:
            try:
                self._pack().erase(where)
            except OSError:
                log.exception("could not erase pack bytes at %s", where)
            return
        try:
            with self._writer.connect() as conn:
                conn.exec_driver_sql(
                    "SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = %(oid)s",
                    {"oid": where.offset},
                )
                conn.commit()
        except Exception:  # the writer thread calls this after a commit: it must go on
            log.exception("could not unlink large object %d", where.offset)

    def _pack(self) -> BlobStore:
        if self._legacy is None:
            if self._legacy_root is None:
                raise BlobCorrupted("bytes in a pack segment and no blob directory configured")
            self._legacy = BlobStore(self._legacy_root)
        return self._legacy

    def close(self) -> None:
        with self._lock:
            self._drop_pending()
        if self._legacy is not None:
            self._legacy.close()
