"""What the ``receipts`` workload reads of a Palais instance besides IMAP.

Palais files a signed deposit-and-delivery receipt with every accepted
message and a read receipt on the first \\Seen of a received message; each is
a mail in the sender's Accusés de réception boxes and a leaf of the evidence
log (``evidence_log``, ``tree_head``). The workload counts them and their
bytes in the instance's SQLite database (``palais.db``, opened read-only
beside the running server) and sizes the instance directory. Nothing here
writes or imports Palais.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

DEPOSIT = "depot"  # palais.mailbox.evidence.EventCode.DEPOT
FIRST_READ = "premiere-lecture"  # EventCode.PREMIERE_LECTURE
SENDER_RECEIPTS_BOX = "Accusés de réception"  # the sender's global view (IMAP: Accus&AOk-s ...)


@dataclass(frozen=True)
class ReceiptBytes:
    """Receipts issued since a mark: how many of each kind and their stored bytes."""

    deposits: int
    reads: int
    mail_bytes: int  # the receipt mails (S/MIME), stored once each in the blob segments
    evidence_bytes: int  # evidence_log rows: the canonical evidence JSON, its id and leaf hash
    tree_heads: int  # signed tree heads added (one per writer batch that issued receipts)
    tree_head_bytes: int
    message_bytes: int  # the messages the deposit receipts are about, for scale


def database(instance: Path) -> Path | None:
    """The instance's SQLite database, if it has one (not with PostgreSQL)."""
    db = instance / "palais.db"
    return db if db.exists() else None


def _connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    conn.execute("PRAGMA query_only = ON")
    return conn


def log_size(db: Path) -> int:
    """How many receipts the evidence log holds (the next leaf's position)."""
    conn = _connect(db)
    try:
        (size,) = conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM evidence_log").fetchone()
        return int(size)
    finally:
        conn.close()


def since(db: Path, start: int) -> ReceiptBytes:
    """Receipts appended to the log from position ``start`` on, with their bytes."""
    conn = _connect(db)
    try:
        deposits, reads, evidence = conn.execute(
            "SELECT COALESCE(SUM(instr(',' || events || ',', ?) > 0), 0),"
            " COALESCE(SUM(instr(',' || events || ',', ?) > 0), 0),"
            " COALESCE(SUM(length(CAST(evidence AS BLOB)) + length(evidence_id)"
            " + length(leaf_hash)), 0)"
            " FROM evidence_log WHERE position >= ?",
            (f",{DEPOSIT},", f",{FIRST_READ},", start),
        ).fetchone()
        (mail,) = conn.execute(
            "SELECT COALESCE(SUM(m.size), 0) FROM evidence_log e"
            " JOIN message m ON m.id = e.receipt_message WHERE e.position >= ?",
            (start,),
        ).fetchone()
        (about,) = conn.execute(
            "SELECT COALESCE(SUM(m.size), 0) FROM evidence_log e"
            " JOIN message m ON m.id = e.about WHERE e.position >= ?"
            " AND instr(',' || e.events || ',', ?) > 0",
            (start, f",{DEPOSIT},"),
        ).fetchone()
        heads, head_bytes = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(CAST(document AS BLOB))"
            " + length(CAST(signature AS BLOB))), 0) FROM tree_head WHERE size > ?",
            (start,),
        ).fetchone()
        return ReceiptBytes(
            int(deposits),
            int(reads),
            int(mail),
            int(evidence),
            int(heads),
            int(head_bytes),
            int(about),
        )
    finally:
        conn.close()


def instance_bytes(instance: Path) -> int:
    """Bytes of the instance's store: the database's used pages and the blob segments.

    The pages are counted as a reader sees them (with the WAL's committed
    frames, without free pages), so the figure does not jump with checkpoints
    or with the WAL file's reuse.
    """
    total = 0
    db = database(instance)
    if db is not None:
        conn = _connect(db)
        try:
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            (free,) = conn.execute("PRAGMA freelist_count").fetchone()
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
            total += (int(pages) - int(free)) * int(page_size)
        finally:
            conn.close()
    blobs = instance / "blobs"
    if blobs.is_dir():
        total += sum(f.stat().st_size for f in blobs.rglob("*") if f.is_file())
    return total
