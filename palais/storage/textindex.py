"""The substring index behind SEARCH BODY, TEXT and HEADER (migration 0009).

Each message's two search documents (``palais.mailbox.searchtext``) are
indexed by their three-character sequences when the message is filed:
SQLite's FTS5 trigram tokenizer (two contentless tables, positions not
kept: ``message_head_text`` and ``message_body_text``, rowid = message id),
PostgreSQL's pg_trgm (``message_text`` with a GIN index per column). A
search asks which messages of a box may contain a needle; the exact test
reads only those. Messages filed before the index existed are listed in
``text_pending`` until ``backfill`` has indexed them; a search counts them
as candidates meanwhile, so nothing is ever missed.

On SQLite a contentless table cannot forget a row without its text: the
rows of purged messages stay, and only ever add candidates that the
box's entries then filter out (a reused message id keeps both rows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import Connection, Engine

from palais.mailbox.ports import BlobCorrupted, BlobLocation, MessageBytes
from palais.mailbox.searchtext import SearchDocuments, documents, indexable
from palais.storage.rows import Rows, rows_for
from palais.storage.sql import EVIDENCE_SEGMENT, driver

__all__ = ["Part", "backfill", "candidates", "index_later", "index_later_from"]

Part = Literal["header", "body", "text"]

# Terms of one FTS5 query: each one can only narrow the candidates further.
_MAX_TERMS = 24
# Messages indexed per transaction while backfilling.
_BACKFILL_BATCH = 200


_LIST = "INSERT INTO text_pending (message_id) "


def index_later(conn: Connection, *message_ids: int) -> None:
    """List messages being filed for indexing (``palais.storage.indexing``
    indexes them off the filing path); searches read them meanwhile."""
    if message_ids:
        rows_for(conn).run(
            _LIST + "VALUES " + ", ".join(["(?)"] * len(message_ids)),
            message_ids,
        )


def index_later_from(relation: str) -> str:
    """``index_later`` as a statement (PostgreSQL: a part of a WITH) listing
    the ``id`` column of ``relation``: the rows a statement inserts."""
    return f"{_LIST}SELECT id FROM {relation}"


def _insert(conn: Connection, docs: list[tuple[int, SearchDocuments]]) -> None:
    rows = rows_for(conn)
    if conn.dialect.name == "sqlite":
        rows.many(
            "INSERT INTO message_head_text (rowid, head) VALUES (?, ?)",
            [(mid, d.head) for mid, d in docs],
        )
        rows.many(
            "INSERT INTO message_body_text (rowid, body) VALUES (?, ?)",
            [(mid, d.body) for mid, d in docs],
        )
    else:
        rows.many(
            "INSERT INTO message_text (message_id, head, body) VALUES (?, ?, ?)"
            " ON CONFLICT (message_id) DO NOTHING",
            [(mid, d.head, d.body) for mid, d in docs],
        )


def _fts_query(needle: str) -> str:
    """Every distinct trigram of the needle, all required (no positions are
    kept: this is the narrowing, the exact test the deciding)."""
    terms = list(dict.fromkeys(needle[i : i + 3] for i in range(len(needle) - 2)))
    if len(terms) > _MAX_TERMS:
        # Spread over the needle rather than only its start.
        step = len(terms) / _MAX_TERMS
        terms = [terms[int(i * step)] for i in range(_MAX_TERMS)]
    return " AND ".join('"' + t.replace('"', '""') + '"' for t in terms)


def _like(needle: str) -> str:
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "%" + escaped + "%"


def candidates(conn: Connection, mailbox_id: int, part: Part, needle: str) -> set[int] | None:
    """UIDs of the box's messages whose documents may contain ``needle``
    (case-folded), or None when the index cannot narrow this needle."""
    if not indexable(needle):
        return None
    cur, mark = driver(conn)
    try:
        # The messages not indexed yet first: the indexing process indexes a
        # message and unlists it in one transaction, so one unlisted by the
        # time this ran is found by the index query after it (each statement
        # may see a later commit than the one before).
        uids = _pending_in_box(cur, conn.dialect.name == "sqlite", mark, mailbox_id)
        if conn.dialect.name == "sqlite":
            tables = {
                "header": ("message_head_text",),
                "body": ("message_body_text",),
                "text": ("message_head_text", "message_body_text"),
            }[part]
            query = _fts_query(needle)
            for table in tables:
                # The hits first (few, for a rare word), then their entries
                # in this box through the entry's message index.
                cur.execute(
                    f"SELECT uid FROM entry WHERE +mailbox_id = {mark} AND message_id IN"
                    f" (SELECT rowid FROM {table} WHERE {table} MATCH {mark})",
                    (mailbox_id, query),
                )
                uids.update(int(r[0]) for r in cur.fetchall())
        else:
            columns = {"header": ("head",), "body": ("body",), "text": ("head", "body")}[part]
            test = " OR ".join(f"t.{c} LIKE {mark}" for c in columns)
            pattern = _like(needle)
            cur.execute(
                "SELECT e.uid FROM message_text t JOIN entry e ON e.message_id = t.message_id"
                f" WHERE e.mailbox_id = {mark} AND ({test})",
                (mailbox_id, *([pattern] * len(columns))),
            )
            uids.update(int(r[0]) for r in cur.fetchall())
        return uids
    finally:
        cur.close()


def backfill(
    engine: Engine,
    blobs: MessageBytes,
    *,
    reader: Engine | None = None,
    batch: int = _BACKFILL_BATCH,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Index the messages listed in ``text_pending`` (filed since, or before
    the index existed), a batch per transaction, reading their bytes from
    ``blobs`` (a receipt's from its evidence log row). Returns how many were
    indexed. A message whose bytes cannot be read stays listed (searches
    keep reading it). Several nodes may run this at once: a message indexed
    twice on SQLite only repeats its rows; on PostgreSQL the second insert
    is skipped.

    With ``reader``, the bytes are read and their documents made outside the
    write transaction, which then only inserts: on SQLite the gateway's
    writer waits for that lock while it is held.
    """
    done = 0
    after = -1
    while stop is None or not stop():
        with (reader or engine).begin() as conn:
            rows = rows_for(conn)
            listed = rows.all(
                'SELECT p.message_id, m.blob, b.segment, b."offset", b.length'
                " FROM text_pending p LEFT JOIN message m ON m.id = p.message_id"
                " LEFT JOIN blob b ON b.sha256 = m.blob"
                " WHERE p.message_id > ? ORDER BY p.message_id LIMIT ?",
                (after, batch),
            )
            if not listed:
                return done
            after = int(listed[-1][0])
            read: list[tuple[int, bytes]] = []
            settled: list[tuple[Any, ...]] = []
            for mid, sha, segment, offset, length in listed:
                if sha is None or segment is None:
                    settled.append((mid,))  # the message is gone since
                    continue
                data = _bytes_of(rows, blobs, sha, BlobLocation(segment, int(offset), int(length)))
                if data is None:
                    continue
                read.append((int(mid), data))
                settled.append((mid,))
        indexed = [(mid, documents(data)) for mid, data in read]
        with engine.begin() as conn:
            if indexed and conn.dialect.name != "sqlite":
                # A message purged since it was read: no row may name it.
                marks = ", ".join("?" * len(indexed))
                present = {
                    int(r[0])
                    for r in rows_for(conn).all(
                        f"SELECT id FROM message WHERE id IN ({marks})",
                        tuple(mid for mid, _ in indexed),
                    )
                }
                indexed = [(mid, d) for mid, d in indexed if mid in present]
            _insert(conn, indexed)
            rows_for(conn).many("DELETE FROM text_pending WHERE message_id = ?", settled)
        done += len(indexed)
    return done


def _bytes_of(rows: Rows, blobs: MessageBytes, sha: str, where: BlobLocation) -> bytes | None:
    if where.segment == EVIDENCE_SEGMENT:
        found = rows.one("SELECT receipt FROM evidence_log WHERE position = ?", (where.offset,))
        return None if found is None else bytes(found[0])
    try:
        return blobs.read(where, sha)
    except (OSError, BlobCorrupted):  # unreadable: left pending
        return None


def subject_hits(conn: Connection, mailbox_id: int, text: str, pattern: str) -> set[int] | None:
    """SEARCH SUBJECT through the index: the UIDs whose stored subject is
    LIKE ``pattern`` (as ``MailReads.search_header`` tests it), among the
    messages whose header side may hold ``text`` and those not indexed yet;
    None when the index cannot narrow it (a short needle)."""
    # The stored subject is one of the header side's renderings, case-folded:
    # what LIKE finds there, folded, the index finds.
    needle = text.lower().casefold()
    if not indexable(needle):
        return None
    sqlite = conn.dialect.name == "sqlite"
    cur, mark = driver(conn)
    # SQLite's LIKE ignores ASCII case (lower() folds nothing more); the
    # PostgreSQL test is search_header's own.
    like = f"{'m.subject' if sqlite else 'lower(m.subject)'} LIKE {mark} ESCAPE '\\'"
    if sqlite:
        indexed = f"SELECT rowid FROM message_head_text WHERE message_head_text MATCH {mark}"
        term = _fts_query(needle)
    else:
        indexed = f"SELECT message_id FROM message_text WHERE head LIKE {mark}"
        term = _like(needle)
    try:
        hits: set[int] = set()
        for among, params in (
            # Messages not indexed yet (just filed), tested as they are; first,
            # for the reason given in ``candidates``.
            ("SELECT message_id FROM text_pending", ()),
            (indexed, (term,)),
        ):
            if not params and not _any_pending(cur):
                continue
            cur.execute(
                "SELECT e.uid FROM entry e JOIN message m ON m.id = e.message_id"
                f" WHERE {_box(sqlite, mark)} AND e.message_id IN ({among}) AND {like}",
                (mailbox_id, *params, pattern),
            )
            hits.update(int(r[0]) for r in cur.fetchall())
        return hits
    finally:
        cur.close()


def _pending_in_box(cur: Any, sqlite: bool, mark: str, mailbox_id: int) -> set[int]:
    if not _any_pending(cur):
        return set()
    cur.execute(
        f"SELECT e.uid FROM entry e WHERE {_box(sqlite, mark)}"
        " AND e.message_id IN (SELECT message_id FROM text_pending)",
        (mailbox_id,),
    )
    return {int(r[0]) for r in cur.fetchall()}


def _any_pending(cur: Any) -> bool:
    cur.execute("SELECT 1 FROM text_pending LIMIT 1")
    return cur.fetchone() is not None


def _box(sqlite: bool, mark: str) -> str:
    # SQLite: "+" keeps the planner off the box's entries (a scan of the
    # box) and on the entry's message index, the hits being few.
    return f"+e.mailbox_id = {mark}" if sqlite else f"e.mailbox_id = {mark}"
