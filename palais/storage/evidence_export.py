"""Exporting the evidence log: a directory anyone can check without the gateway.

The evidence log is self-sufficient: receipts are never purged with the
messages they prove, and every leaf keeps its exact evidence bytes. The
export writes them, with the signed tree heads and the evidence
certificate, in the format ``palais.pki.evidencelog.verify_log`` checks
(``palais evidence verify``); the file names are repeated here because
storage does not import the PKI layer, and a test holds both to the same
values.

``export_log`` reads the log in one snapshot where the database gives one,
tree heads first, so that every tree head it writes covers only leaves it
writes; and as a stream: a log of millions of receipts is never held in
memory.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine, select

from palais.mailbox.evidence import canonical_json
from palais.storage.schema import EvidenceLog, TreeHead, table

LEAVES_FILE: Final = "leaves.jsonl"
TREE_HEADS_FILE: Final = "tree-heads.jsonl"
CERTIFICATES_FILE: Final = "evidence.pem"
README_FILE: Final = "LISEZ-MOI.txt"
# Rows fetched at a time: memory stays flat whatever the log's size.
_BATCH: Final = 1000
# Irregular positions kept for the summary; beyond, only counted.
_MAX_LISTED: Final = 100

README: Final = """\
Journal des preuves de Palais / Palais evidence log
===================================================

[Français]

Ce répertoire est une copie complète du journal des preuves : il se vérifie
sans accès au serveur.

  leaves.jsonl      une ligne par accusé de réception, dans l'ordre du
                    journal ; chaque ligne est exactement le document de
                    preuve (JSON canonique) que l'accusé signé contient.
  tree-heads.jsonl  les têtes d'arbre signées : une ligne JSON par tête,
                    {"document": ..., "signature": ...} ; "document" est le
                    texte signé (taille du journal, racine de l'arbre de
                    Merkle, date, empreinte du certificat signataire) et
                    "signature" sa signature SHA-256 en base64 (ECDSA DER ou
                    RSA PKCS#1 v1.5).
  evidence.pem      le certificat de la clé de preuve, puis sa chaîne.

Vérifier : palais evidence verify <répertoire> [--trust AC.pem]
  (ajouter --receipt preuve.json pour vérifier qu'un accusé y figure).

Vérifier à la main (RFC 9162, arbre de Merkle de Certificate Transparency) :
  1. l'empreinte d'une feuille est SHA-256(0x00 || ligne, sans le saut de
     ligne) ; celle d'un nœud SHA-256(0x01 || gauche || droite) ;
  2. chaque preuve indique log.position (son rang, à partir de 0) et
     log.previous (l'empreinte hexadécimale de la feuille précédente, 64 zéros
     pour la première) : le journal est chaîné ;
  3. la racine des "size" premières feuilles d'une tête doit être son "root" ;
  4. la signature se vérifie par exemple ainsi :
       openssl x509 -in evidence.pem -pubkey -noout > cle.pem
       openssl dgst -sha256 -verify cle.pem -signature sig.bin document.json
     où document.json contient exactement le texte de "document" (sans saut
     de ligne final) et sig.bin la signature décodée du base64.

[English]

This directory is a complete copy of the evidence log: it can be checked
without access to the server.

  leaves.jsonl      one line per receipt, in log order; each line is exactly
                    the evidence document (canonical JSON) the signed
                    receipt carries.
  tree-heads.jsonl  the signed tree heads: one JSON line each,
                    {"document": ..., "signature": ...}; "document" is the
                    signed text (log size, Merkle tree root, time, hash of
                    the signer's certificate) and "signature" its SHA-256
                    signature in base64 (ECDSA DER or RSA PKCS#1 v1.5).
  evidence.pem      the evidence key's certificate, then its chain.

Check it: palais evidence verify <directory> [--trust CA.pem]
  (add --receipt evidence.json to check that one receipt is in it).

Check it by hand (RFC 9162, the Certificate Transparency Merkle tree):
  1. a leaf's hash is SHA-256(0x00 || line, without its newline); a node's
     is SHA-256(0x01 || left || right);
  2. each evidence document gives log.position (its index, from 0) and
     log.previous (the previous leaf's hash in hex, 64 zeros for the first):
     the log is chained;
  3. the root of the first "size" leaves of a tree head must be its "root";
  4. the signature can be checked for instance with:
       openssl x509 -in evidence.pem -pubkey -noout > key.pem
       openssl dgst -sha256 -verify key.pem -signature sig.bin document.json
     where document.json holds exactly the text of "document" (no final
     newline) and sig.bin the signature decoded from base64.
"""


class ExportRefused(Exception):
    """The export cannot be written there (not empty, or not a directory)."""


class ExportFailed(Exception):
    """The log holds something that cannot be written in the export format."""


class LogExport:
    """Writes an export directory as the log is read, one line at a time.

    Leaves in position order and tree heads in size order may be added in
    any interleaving (they go to two files); nothing is held in memory but
    the open files. The README is written last, on a clean close: a
    directory without it is an unfinished export.
    """

    def __init__(self, dest: Path, certificates: Sequence[x509.Certificate]) -> None:
        if not certificates:
            raise ValueError("the export needs the evidence certificate")
        if dest.exists() and not dest.is_dir():
            raise ExportRefused(f"{dest} exists and is not a directory")
        if dest.is_dir() and any(dest.iterdir()):
            # Never mix two exports, nor overwrite a copy someone keeps.
            raise ExportRefused(f"{dest} is not empty: export into a new or empty directory")
        dest.mkdir(parents=True, exist_ok=True)
        self.dest = dest
        (dest / CERTIFICATES_FILE).write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
        )
        self._leaves = (dest / LEAVES_FILE).open("wb")
        self._heads = (dest / TREE_HEADS_FILE).open("wb")
        self.leaf_count = 0
        self.tree_head_count = 0

    def add_leaf(self, evidence: bytes) -> None:
        """One leaf: the evidence document's exact bytes."""
        if b"\n" in evidence:
            # Canonical JSON escapes newlines; a raw one would split the leaf.
            raise ValueError("an evidence document is one line of canonical JSON")
        self._leaves.write(evidence + b"\n")
        self.leaf_count += 1

    def add_tree_head(self, document: str, signature: str) -> None:
        """One signed tree head as stored: its document (text) and signature (base64)."""
        try:
            base64.b64decode(signature, validate=True)
        except binascii.Error as error:
            raise ValueError(f"the tree head's signature is not base64: {error}") from error
        self._heads.write(canonical_json({"document": document, "signature": signature}) + b"\n")
        self.tree_head_count += 1

    def close(self) -> None:
        self._leaves.close()
        self._heads.close()
        (self.dest / README_FILE).write_text(README, encoding="utf-8")

    def abort(self) -> None:
        """Close the files without the README: the directory stays visibly unfinished."""
        self._leaves.close()
        self._heads.close()

    def __enter__(self) -> LogExport:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What was written, and what the database already showed to be irregular.

    The export writes the log as it is, irregularities included (it is the
    verifier's job to judge them, and a damaged log is still evidence): the
    lists name the first positions where the stored leaf hash is not the
    hash of the stored evidence, or where a position is not the next one.
    """

    dest: Path
    leaves: int
    tree_heads: int
    signed_size: int | None  # the largest tree head's size, None without any
    leaf_hash_mismatches: tuple[int, ...]
    misplaced: tuple[int, ...]

    @property
    def unsigned(self) -> int:
        """Leaves after the largest tree head (``verify`` reports them)."""
        return max(0, self.leaves - (self.signed_size or 0))


def export_log(
    engine: Engine, dest: Path, certificates: Sequence[x509.Certificate]
) -> ExportSummary:
    """Write the whole evidence log into ``dest`` (new or empty), with ``certificates``
    (the evidence certificate, then its chain) as evidence.pem.

    Raises ``ExportRefused`` before reading anything if ``dest`` is not new or
    empty, ``ExportFailed`` if a stored tree head cannot be written.
    """
    leaves = table(EvidenceLog)
    heads = table(TreeHead)
    mismatches: list[int] = []
    misplaced: list[int] = []
    signed_size: int | None = None
    with LogExport(dest, certificates) as out, engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for both tables (READ COMMITTED would take one per
            # statement): a tree head never counts a leaf the export lacks.
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            # Tree heads first: leaves are only ever appended, so even without
            # one snapshot every head read covers leaves read after it (at
            # worst a receipt committed in between is written unsigned).
            # Each result in a with block: a server-side cursor (PostgreSQL)
            # is closed even when a row stops the export.
            with conn.execute(
                select(heads.c.size, heads.c.document, heads.c.signature).order_by(heads.c.size),
                execution_options={"yield_per": _BATCH},
            ) as head_rows:
                for size, document, signature in head_rows:
                    try:
                        out.add_tree_head(str(document), str(signature))
                    except ValueError as error:
                        raise ExportFailed(f"tree head of size {size}: {error}") from error
                    signed_size = int(size)
            with conn.execute(
                select(leaves.c.position, leaves.c.evidence, leaves.c.leaf_hash).order_by(
                    leaves.c.position
                ),
                execution_options={"yield_per": _BATCH},
            ) as leaf_rows:
                for index, (position, text, stored_hash) in enumerate(leaf_rows):
                    data = str(text).encode()
                    out.add_leaf(data)
                    if position != index and len(misplaced) < _MAX_LISTED:
                        misplaced.append(int(position))
                    # RFC 9162's leaf hash, as the gateway stored it when appending.
                    leaf = sha256(b"\x00" + data).hexdigest()
                    if leaf != stored_hash and len(mismatches) < _MAX_LISTED:
                        mismatches.append(int(position))
        summary = ExportSummary(
            dest,
            out.leaf_count,
            out.tree_head_count,
            signed_size,
            tuple(mismatches),
            tuple(misplaced),
        )
    return summary
