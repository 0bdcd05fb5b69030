"""Signed tree heads of the evidence log, and the exported log checked offline.

A signed tree head (STH) says, under the evidence key, "the log had
``size`` leaves and this root at this time": with the leaves, anyone can
recompute the root, and with one receipt and an inclusion proof, see that
the receipt was in the log the gateway signed. The document is canonical
JSON (``palais.mailbox.evidence.canonical_json``), like the evidence
itself, and those exact bytes are what the key signs.

The exported log is a directory that needs nothing of the gateway to be
checked: ``leaves.jsonl`` (the evidence documents in log order, one per
line, exactly their bytes), ``tree-heads.jsonl`` (one STH per line, as
``tree_head_line`` writes it), ``evidence.pem`` (the evidence certificate
and its chain), ``LISEZ-MOI.txt``. ``palais.storage.evidence_export`` writes
it from the database (storage may not import this package: the file names
are repeated there, and a test holds the two to the same values).
``verify_log`` checks the whole of it and ``check_inclusion`` one receipt
in it, both reading the leaves as a stream (a log of millions of receipts
is not held in memory), both returning a verdict whose problems have a
stable code and a text in French and in English.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography import x509

from palais.mailbox.evidence import GENESIS, canonical_json, parse_timestamp, timestamp
from palais.pki.merkle import Frontier, inclusion_ranges, leaf_hash, verify_inclusion
from palais.pki.signing import (
    EvidenceKey,
    certificate_sha256,
    issued_by,
    valid_at,
    verify_signature,
)

TREE_HEAD_VERSION: Final = 1
LOG_NAME: Final = "palais-evidence"
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_TREE_HEAD_KEYS: Final = frozenset(
    {"version", "log", "size", "root", "time", "signer_certificate_sha256"}
)


def tree_head_document(
    size: int, root: bytes, time: datetime, signer_certificate_sha256: str
) -> bytes:
    """The bytes an STH signs: canonical JSON of the log's size, root, time and signer."""
    if size < 0:
        raise ValueError(f"a log cannot have {size} leaves")
    if len(root) != 32:
        raise ValueError("a tree root is a SHA-256 digest of 32 bytes")
    if time.tzinfo is None:
        # timestamp() would read a naive time as local: say which instant it is.
        raise ValueError("a tree head's time must carry its time zone")
    if not _HEX64.fullmatch(signer_certificate_sha256):
        raise ValueError("the signer's certificate hash is 64 lower-case hex digits")
    return canonical_json(
        {
            "version": TREE_HEAD_VERSION,
            "log": LOG_NAME,
            "size": size,
            "root": root.hex(),
            "time": timestamp(time),
            "signer_certificate_sha256": signer_certificate_sha256,
        }
    )


@dataclass(frozen=True, slots=True)
class TreeHead:
    """What an STH document says."""

    size: int
    root: bytes
    time: datetime
    signer_certificate_sha256: str


def parse_tree_head(document: bytes) -> TreeHead:
    """The tree head ``tree_head_document`` wrote; ValueError for anything else.

    Strict, spelling included (canonical JSON, no extra keys): a document
    that could be written two ways could be signed in one and shown in the
    other.
    """
    try:
        data: Any = json.loads(document)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not JSON: {error}") from error
    if not isinstance(data, dict) or set(data) != _TREE_HEAD_KEYS:
        raise ValueError(f"a tree head has exactly the keys {sorted(_TREE_HEAD_KEYS)}")
    if data["version"] != TREE_HEAD_VERSION or data["log"] != LOG_NAME:
        raise ValueError(f"not a version {TREE_HEAD_VERSION} tree head of {LOG_NAME}")
    size, root, time, signer = (
        data["size"],
        data["root"],
        data["time"],
        data["signer_certificate_sha256"],
    )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("a tree head's size is a non-negative integer")
    if not isinstance(root, str) or not _HEX64.fullmatch(root):
        raise ValueError("a tree head's root is 64 lower-case hex digits")
    if not isinstance(signer, str) or not _HEX64.fullmatch(signer):
        raise ValueError("a tree head's signer is 64 lower-case hex digits")
    if not isinstance(time, str):
        raise ValueError("a tree head's time is a string")
    when = parse_timestamp(time)  # ValueError if it is not our one spelling
    head = TreeHead(size, bytes.fromhex(root), when, signer)
    if tree_head_document(size, head.root, when, signer) != document:
        raise ValueError("a tree head is canonical JSON")
    return head


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """An STH document and the evidence key's signature of exactly those bytes."""

    document: bytes
    signature: bytes

    @property
    def head(self) -> TreeHead:
        return parse_tree_head(self.document)


def sign_tree_head(key: EvidenceKey, size: int, root: bytes, time: datetime) -> SignedTreeHead:
    """The tree head of a log of ``size`` leaves with ``root``, signed by ``key`` at ``time``.

    Raises ``EvidenceUnavailable`` (from the key) if it cannot sign now.
    """
    document = tree_head_document(size, root, time, certificate_sha256(key.certificate))
    return SignedTreeHead(document, key.sign(document))


# -- the exported log ----------------------------------------------------------------

LEAVES_FILE: Final = "leaves.jsonl"
TREE_HEADS_FILE: Final = "tree-heads.jsonl"
CERTIFICATES_FILE: Final = "evidence.pem"
README_FILE: Final = "LISEZ-MOI.txt"


def tree_head_line(sth: SignedTreeHead) -> bytes:
    """One line of tree-heads.jsonl, without its newline."""
    return canonical_json(
        {
            "document": sth.document.decode("ascii"),
            "signature": base64.b64encode(sth.signature).decode("ascii"),
        }
    )


def parse_tree_head_line(line: bytes) -> SignedTreeHead:
    """The signed tree head of one line of tree-heads.jsonl; ValueError if it is not one.

    The document is parsed too (``SignedTreeHead.head`` will not fail).
    """
    try:
        data: Any = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not JSON: {error}") from error
    if not isinstance(data, dict) or set(data) != {"document", "signature"}:
        raise ValueError('a tree head line has exactly "document" and "signature"')
    document, signature = data["document"], data["signature"]
    if not isinstance(document, str) or not isinstance(signature, str):
        raise ValueError("a tree head's document and signature are strings")
    try:
        raw = base64.b64decode(signature, validate=True)
    except binascii.Error as error:
        raise ValueError(f"the signature is not base64: {error}") from error
    sth = SignedTreeHead(document.encode(), raw)
    parse_tree_head(sth.document)
    return sth


# -- checking it offline ---------------------------------------------------------------


class ProblemCode(enum.StrEnum):
    """What can be wrong with an exported log; the values are stable, for scripts."""

    UNREADABLE = "unreadable"  # a file is missing or cannot be read or parsed
    LEAF_MALFORMED = "leaf-malformed"  # a line is not an evidence document
    LEAF_POSITION = "leaf-position"  # log.position is not the line's index
    LEAF_PREVIOUS = "leaf-previous"  # log.previous is not the previous leaf's hash
    TREE_HEAD_MALFORMED = "tree-head-malformed"
    TREE_HEAD_SIGNER = "tree-head-signer"  # signed by another certificate than evidence.pem's
    TREE_HEAD_SIGNATURE = "tree-head-signature"  # the signature does not verify
    TREE_HEAD_ROOT = "tree-head-root"  # the root is not the root of its first leaves
    TREE_HEAD_BEYOND_LOG = "tree-head-beyond-log"  # it counts leaves the file lacks
    TREE_HEAD_ORDER = "tree-head-order"  # size or time goes backwards
    LEAVES_UNSIGNED = "leaves-unsigned"  # leaves after the last tree head
    CERTIFICATE_NOT_VALID = "certificate-not-valid"  # outside its validity when it signed
    CHAIN_UNTRUSTED = "chain-untrusted"  # not issued (through the chain) by the anchor
    EVIDENCE_MALFORMED = "evidence-malformed"  # the receipt's evidence is not one
    NOT_IN_LOG = "not-in-log"  # the log has no leaf at the receipt's position
    LEAF_DIFFERS = "leaf-differs"  # the leaf there is not the receipt's evidence
    NOT_YET_SIGNED = "not-yet-signed"  # no valid tree head covers the receipt
    INCLUSION_PROOF = "inclusion-proof"  # the proof does not reach the tree head's root


@dataclass(frozen=True, slots=True)
class Problem:
    code: ProblemCode
    fr: str
    en: str
    file: str | None = None
    line: int | None = None  # 1-based, in ``file``

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "fr": self.fr,
            "en": self.en,
            "file": self.file,
            "line": self.line,
        }


@dataclass(frozen=True, slots=True)
class LogVerdict:
    problems: list[Problem]
    leaves: int  # leaves read
    tree_heads: int  # tree heads read
    latest: TreeHead | None  # the last well-signed tree head, if any
    anchored: bool  # whether the chain to a trust anchor was checked

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "leaves": self.leaves,
            "tree_heads": self.tree_heads,
            "latest_tree_head": _head_json(self.latest),
            "anchored": self.anchored,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass(frozen=True, slots=True)
class InclusionVerdict:
    problems: list[Problem]
    position: int | None  # the receipt's log.position, if it has one
    tree_head: TreeHead | None  # the tree head it was checked against
    proof: list[bytes]  # the audit path from its leaf to that head's root

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "position": self.position,
            "tree_head": _head_json(self.tree_head),
            "proof": [h.hex() for h in self.proof],
            "problems": [p.to_json() for p in self.problems],
        }


def _head_json(head: TreeHead | None) -> dict[str, Any] | None:
    if head is None:
        return None
    return {"size": head.size, "root": head.root.hex(), "time": timestamp(head.time)}


# A log whose order is broken at one leaf would report every leaf after it:
# the first few of each kind say where, and a count says how many.
_MAX_PER_CODE: Final = 10


class _Problems:
    def __init__(self) -> None:
        self.found: list[Problem] = []
        self._counts: Counter[ProblemCode] = Counter()

    def add(
        self,
        code: ProblemCode,
        fr: str,
        en: str,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        self._counts[code] += 1
        if self._counts[code] <= _MAX_PER_CODE:
            self.found.append(Problem(code, fr, en, file, line))

    def result(self) -> list[Problem]:
        more = [
            Problem(
                code,
                f"… et {n - _MAX_PER_CODE} autre(s) problème(s) de ce type.",
                f"… and {n - _MAX_PER_CODE} more problem(s) of this kind.",
            )
            for code, n in self._counts.items()
            if n > _MAX_PER_CODE
        ]
        return self.found + more


def _read_lines(path: Path) -> Iterator[bytes]:
    """The lines of a JSON-lines file, without their newline (OSError if unreadable)."""
    with path.open("rb") as f:
        for line in f:
            yield line[:-1] if line.endswith(b"\n") else line


def _read_certificates(directory: Path, problems: _Problems) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates((directory / CERTIFICATES_FILE).read_bytes())
    except (OSError, ValueError) as error:
        problems.add(
            ProblemCode.UNREADABLE,
            f"Le certificat de preuve est illisible : {error}",
            f"The evidence certificate cannot be read: {error}",
            CERTIFICATES_FILE,
        )
        return []
    return certs


@dataclass(frozen=True, slots=True)
class _LineHead:
    line: int
    sth: SignedTreeHead
    head: TreeHead
    signed: bool  # by evidence.pem's certificate, and the signature verifies


def _read_tree_heads(
    directory: Path, certificate: x509.Certificate | None, problems: _Problems
) -> list[_LineHead] | None:
    """The well-formed tree heads, their signatures checked; None if the file is unreadable."""
    signer = certificate_sha256(certificate) if certificate is not None else None
    heads: list[_LineHead] = []
    try:
        for n, line in enumerate(_read_lines(directory / TREE_HEADS_FILE), start=1):
            try:
                sth = parse_tree_head_line(line)
            except ValueError as error:
                problems.add(
                    ProblemCode.TREE_HEAD_MALFORMED,
                    f"Tête d'arbre mal formée : {error}",
                    f"Malformed tree head: {error}",
                    TREE_HEADS_FILE,
                    n,
                )
                continue
            head = sth.head
            signed = False
            if certificate is None:
                pass  # evidence.pem is unreadable: already reported
            elif head.signer_certificate_sha256 != signer:
                problems.add(
                    ProblemCode.TREE_HEAD_SIGNER,
                    "La tête d'arbre est signée par un autre certificat que celui d'evidence.pem.",
                    "The tree head is signed by another certificate than evidence.pem's.",
                    TREE_HEADS_FILE,
                    n,
                )
            elif not verify_signature(certificate, sth.signature, sth.document):
                problems.add(
                    ProblemCode.TREE_HEAD_SIGNATURE,
                    "La signature de la tête d'arbre n'est pas valide.",
                    "The tree head's signature is not valid.",
                    TREE_HEADS_FILE,
                    n,
                )
            else:
                signed = True
            heads.append(_LineHead(n, sth, head, signed))
    except OSError as error:
        problems.add(
            ProblemCode.UNREADABLE,
            f"Les têtes d'arbre sont illisibles : {error}",
            f"The tree heads cannot be read: {error}",
            TREE_HEADS_FILE,
        )
        return None
    return heads


def _leaf_position(leaf: bytes) -> tuple[int, str]:
    """The leaf's log.position and log.previous; ValueError if it has none."""
    try:
        data: Any = json.loads(leaf)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not JSON: {error}") from error
    log = data.get("log") if isinstance(data, dict) else None
    if not isinstance(log, dict):
        raise ValueError('no "log" object')
    position, previous = log.get("position"), log.get("previous")
    if not isinstance(position, int) or isinstance(position, bool):
        raise ValueError("log.position is not an integer")
    if not isinstance(previous, str):
        raise ValueError("log.previous is not a string")
    return position, previous


def _check_chain(
    certs: Sequence[x509.Certificate],
    anchor: x509.Certificate | None,
    times: Sequence[datetime],
    problems: _Problems,
) -> None:
    """The evidence certificate was valid whenever it signed, and chains to the anchor."""
    if not certs:
        return
    chain = list(certs)
    if anchor is not None:
        # evidence.pem may end with the anchor itself; it is then no extra link.
        if chain[-1] == anchor and len(chain) > 1:
            chain.pop()
        for cert, issuer in zip(chain, [*chain[1:], anchor], strict=True):
            if not issued_by(cert, issuer):
                problems.add(
                    ProblemCode.CHAIN_UNTRUSTED,
                    f"Le certificat « {cert.subject.rfc4514_string()} » n'est pas émis par"
                    f" « {issuer.subject.rfc4514_string()} » : la chaîne n'aboutit pas à"
                    " l'autorité de confiance.",
                    f"The certificate '{cert.subject.rfc4514_string()}' is not issued by"
                    f" '{issuer.subject.rfc4514_string()}': the chain does not reach the"
                    " trust anchor.",
                    CERTIFICATES_FILE,
                )
                break
        chain.append(anchor)
    # At the times it signed (the tree heads' times), not today's: evidence
    # outlives its certificates, and what matters is that the key was
    # certified when it signed. Without an anchor, only the evidence
    # certificate itself is judged.
    for cert in chain if anchor is not None else chain[:1]:
        outside = [t for t in times if not valid_at(cert, t)]
        if outside:
            problems.add(
                ProblemCode.CERTIFICATE_NOT_VALID,
                f"Le certificat « {cert.subject.rfc4514_string()} » (valable du"
                f" {timestamp(cert.not_valid_before_utc)} au {timestamp(cert.not_valid_after_utc)})"
                f" ne l'était pas le {timestamp(outside[0])}, date d'une tête d'arbre signée.",
                f"The certificate '{cert.subject.rfc4514_string()}' (valid from"
                f" {timestamp(cert.not_valid_before_utc)} to {timestamp(cert.not_valid_after_utc)})"
                f" was not valid at {timestamp(outside[0])}, when a tree head was signed.",
                CERTIFICATES_FILE,
            )


def verify_log(directory: Path, trust_anchor: x509.Certificate | None = None) -> LogVerdict:
    """Check an exported log: its leaves are chained in order, every tree head is
    signed by evidence.pem's certificate and is the root of its first leaves, the
    tree heads only grow and the last one covers every leaf; with ``trust_anchor``,
    the certificate chains to it. Reads the leaves as a stream.
    """
    problems = _Problems()
    certs = _read_certificates(directory, problems)
    heads = _read_tree_heads(directory, certs[0] if certs else None, problems)
    if heads is None:
        return LogVerdict(problems.result(), 0, 0, None, trust_anchor is not None)

    previous_head: _LineHead | None = None
    for lh in heads:
        if previous_head is not None and (
            lh.head.size < previous_head.head.size or lh.head.time < previous_head.head.time
        ):
            problems.add(
                ProblemCode.TREE_HEAD_ORDER,
                f"La tête d'arbre (taille {lh.head.size}, {timestamp(lh.head.time)}) précède"
                f" la précédente (taille {previous_head.head.size},"
                f" {timestamp(previous_head.head.time)}) : le journal aurait rétréci ou"
                " remonté le temps.",
                f"The tree head (size {lh.head.size}, {timestamp(lh.head.time)}) comes before"
                f" the previous one (size {previous_head.head.size},"
                f" {timestamp(previous_head.head.time)}): the log would have shrunk or gone"
                " back in time.",
                TREE_HEADS_FILE,
                lh.line,
            )
        previous_head = lh
    by_size: dict[int, list[_LineHead]] = {}
    for lh in heads:
        by_size.setdefault(lh.head.size, []).append(lh)

    def check_roots(size: int, root: bytes) -> None:
        for lh in by_size.get(size, ()):
            if lh.head.root != root:
                problems.add(
                    ProblemCode.TREE_HEAD_ROOT,
                    f"La racine de la tête d'arbre de taille {size} n'est pas celle des"
                    f" {size} premières feuilles.",
                    f"The root of the tree head of size {size} is not the root of the first"
                    f" {size} leaves.",
                    TREE_HEADS_FILE,
                    lh.line,
                )

    frontier = Frontier.empty()
    check_roots(0, frontier.root())
    expected_previous = GENESIS
    try:
        for index, leaf in enumerate(_read_lines(directory / LEAVES_FILE)):
            line = index + 1
            try:
                position, previous = _leaf_position(leaf)
            except ValueError as error:
                problems.add(
                    ProblemCode.LEAF_MALFORMED,
                    f"Cette ligne n'est pas un document de preuve : {error}",
                    f"This line is not an evidence document: {error}",
                    LEAVES_FILE,
                    line,
                )
            else:
                if position != index:
                    problems.add(
                        ProblemCode.LEAF_POSITION,
                        f"La preuve indique la position {position} mais elle est au rang"
                        f" {index} : une feuille manque, est en trop ou est déplacée.",
                        f"The evidence says position {position} but is at index {index}:"
                        " a leaf is missing, added or moved.",
                        LEAVES_FILE,
                        line,
                    )
                if previous != expected_previous:
                    problems.add(
                        ProblemCode.LEAF_PREVIOUS,
                        "L'empreinte de la feuille précédente indiquée par la preuve n'est"
                        " pas celle de la ligne précédente.",
                        "The previous leaf's hash the evidence gives is not the hash of the"
                        " previous line.",
                        LEAVES_FILE,
                        line,
                    )
            hashed = leaf_hash(leaf)
            expected_previous = hashed.hex()
            frontier.append(hashed)
            if frontier.size in by_size:
                check_roots(frontier.size, frontier.root())
    except OSError as error:
        problems.add(
            ProblemCode.UNREADABLE,
            f"Les feuilles sont illisibles : {error}",
            f"The leaves cannot be read: {error}",
            LEAVES_FILE,
        )
        return LogVerdict(
            problems.result(), frontier.size, len(heads), None, trust_anchor is not None
        )

    leaves = frontier.size
    for lh in heads:
        if lh.head.size > leaves:
            problems.add(
                ProblemCode.TREE_HEAD_BEYOND_LOG,
                f"La tête d'arbre compte {lh.head.size} feuilles, le fichier n'en a que"
                f" {leaves} : des feuilles ont été retirées.",
                f"The tree head counts {lh.head.size} leaves, the file has only {leaves}:"
                " leaves were removed.",
                TREE_HEADS_FILE,
                lh.line,
            )
    signed = [lh for lh in heads if lh.signed]
    latest = max(signed, key=lambda lh: lh.head.size).head if signed else None
    covered = max((lh.head.size for lh in signed), default=0)
    if leaves > covered:
        problems.add(
            ProblemCode.LEAVES_UNSIGNED,
            f"{leaves - covered} feuille(s) (à partir de la position {covered}) ne sont"
            " couvertes par aucune tête d'arbre signée.",
            f"{leaves - covered} leaf/leaves (from position {covered}) are covered by no"
            " signed tree head.",
            LEAVES_FILE,
            covered + 1,
        )
    # A forged tree head's time proves nothing about when the key signed;
    # with no signed tree head at all, the certificate is judged today.
    times = [lh.head.time for lh in signed] or [datetime.now(UTC)]
    _check_chain(certs, trust_anchor, times, problems)
    return LogVerdict(problems.result(), leaves, len(heads), latest, trust_anchor is not None)


def check_inclusion(directory: Path, evidence_bytes: bytes) -> InclusionVerdict:
    """Check that one receipt's evidence is in the exported log: the leaf at its
    log.position is the same bytes, and its audit path, computed from the leaves,
    reaches the root of the latest well-signed tree head that covers it.

    Only what the receipt needs is checked; ``verify_log`` checks the rest.
    """
    problems = _Problems()
    try:
        position, _ = _leaf_position(evidence_bytes)
        if position < 0:
            raise ValueError("log.position is negative")
    except ValueError as error:
        problems.add(
            ProblemCode.EVIDENCE_MALFORMED,
            f"Ce n'est pas un document de preuve : {error}",
            f"This is not an evidence document: {error}",
        )
        return InclusionVerdict(problems.result(), None, None, [])
    certs = _read_certificates(directory, problems)
    # Only the tree head this receipt is checked against matters here: the
    # others' faults are verify_log's to report.
    unread = _Problems()
    heads = _read_tree_heads(directory, certs[0] if certs else None, unread)
    if heads is None:
        problems.found.extend(unread.found)
    if heads is None or not certs:
        return InclusionVerdict(problems.result(), position, None, [])
    valid = [lh for lh in heads if lh.signed and lh.head.size > position]
    if not valid:
        problems.add(
            ProblemCode.NOT_YET_SIGNED,
            f"Aucune tête d'arbre valablement signée ne couvre la position {position}.",
            f"No validly signed tree head covers position {position}.",
            TREE_HEADS_FILE,
        )
    target = max(valid, key=lambda lh: lh.head.size).head if valid else None
    size = target.size if target is not None else position + 1

    ranges = inclusion_ranges(position, size)
    roots: dict[tuple[int, int], bytes] = {}
    current: tuple[int, int] | None = None
    frontier = Frontier.empty()
    pending = sorted(ranges)
    found: bytes | None = None
    count = 0
    try:
        for index, leaf in enumerate(_read_lines(directory / LEAVES_FILE)):
            count = index + 1
            if index == position:
                found = leaf
            elif pending and pending[0][0] <= index:
                # The ranges are disjoint and sorted: each leaf feeds the
                # first pending one, whose root is kept when it is full.
                if current is None:
                    current, frontier = pending[0], Frontier.empty()
                frontier.append(leaf_hash(leaf))
                if index + 1 == current[1]:
                    roots[current] = frontier.root()
                    pending.pop(0)
                    current = None
            if count >= size:
                break
    except OSError as error:
        problems.add(
            ProblemCode.UNREADABLE,
            f"Les feuilles sont illisibles : {error}",
            f"The leaves cannot be read: {error}",
            LEAVES_FILE,
        )
        return InclusionVerdict(problems.result(), position, target, [])

    if found is None:
        problems.add(
            ProblemCode.NOT_IN_LOG,
            f"Le journal n'a que {count} feuille(s) : aucune à la position {position}.",
            f"The log has only {count} leaf/leaves: none at position {position}.",
            LEAVES_FILE,
        )
        return InclusionVerdict(problems.result(), position, target, [])
    if found != evidence_bytes:
        problems.add(
            ProblemCode.LEAF_DIFFERS,
            f"La feuille à la position {position} n'est pas cette preuve.",
            f"The leaf at position {position} is not this evidence.",
            LEAVES_FILE,
            position + 1,
        )
    if target is None:
        return InclusionVerdict(problems.result(), position, None, [])
    if count < size:
        problems.add(
            ProblemCode.TREE_HEAD_BEYOND_LOG,
            f"La tête d'arbre compte {size} feuilles, le fichier n'en a que {count}.",
            f"The tree head counts {size} leaves, the file has only {count}.",
            LEAVES_FILE,
        )
        return InclusionVerdict(problems.result(), position, target, [])
    proof = [roots[r] for r in ranges]
    if not verify_inclusion(leaf_hash(evidence_bytes), position, size, proof, target.root):
        problems.add(
            ProblemCode.INCLUSION_PROOF,
            f"La preuve d'inclusion n'aboutit pas à la racine de la tête d'arbre de taille {size}.",
            f"The inclusion proof does not reach the root of the tree head of size {size}.",
            TREE_HEADS_FILE,
        )
    return InclusionVerdict(problems.result(), position, target, proof)
