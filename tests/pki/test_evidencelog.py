"""Signed tree heads and the exported evidence log, checked offline.

Each test makes its own CA and evidence key (palais.pki.certbuilder), builds
a log of real evidence documents (palais.mailbox.evidence), exports it with
palais.storage.evidence_export (from its writer, or from a SQLite database
at the head revision) and checks it; each negative test breaks one thing
and expects that check, by its stable code, to say so.
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import Engine, insert, update

from palais.evidence_cli import EXIT_STATUS, add_commands
from palais.mailbox.evidence import (
    GENESIS,
    Event,
    EventCode,
    MessageFacts,
    Party,
    ReceiptOrder,
    canonical_json,
    evidence_document,
    timestamp,
)
from palais.pki import certbuilder, evidencelog
from palais.pki.evidencelog import (
    CERTIFICATES_FILE,
    LEAVES_FILE,
    README_FILE,
    TREE_HEADS_FILE,
    Problem,
    ProblemCode,
    SignedTreeHead,
    check_inclusion,
    parse_tree_head,
    parse_tree_head_line,
    sign_tree_head,
    tree_head_document,
    tree_head_line,
    verify_log,
)
from palais.pki.merkle import EMPTY_ROOT, Frontier, leaf_hash, root_of, verify_inclusion
from palais.pki.signing import FileKey, certificate_sha256, verify_signature
from palais.storage import evidence_export, migrate_database
from palais.storage.engine import make_engine
from palais.storage.evidence_export import (
    ExportFailed,
    ExportRefused,
    LogExport,
    export_log,
)
from palais.storage.schema import EvidenceLog, TreeHead, table
from tests.postgres_server import (  # noqa: F401  (pytest finds fixtures by name)
    postgres_server_fixture,
    postgres_url_fixture,
)

# Tree heads are signed from T0 on, hourly: within the validity of certificates
# issued now (certbuilder backdates them a little).
T0 = certbuilder.now()


@dataclass
class Pki:
    ca: certbuilder.CertificateAuthority
    key: FileKey


def make_pki(common_name: str = "AC de test", validity: certbuilder.Validity | None = None) -> Pki:
    ca = certbuilder.CertificateAuthority.create(certbuilder.name(common_name, country="FR"))
    issued = ca.issue(
        certbuilder.name("Palais - Service de preuve (test)", country="FR"),
        profile=certbuilder.EVIDENCE,
        # From before T0 (taken when the module was collected, maybe minutes
        # ago in a long run): tree heads signed from T0 on fall within it.
        validity=validity
        or certbuilder.Validity.lasting(timedelta(days=400), start=T0 - timedelta(days=1)),
    )
    return Pki(ca, FileKey(issued.key, issued.cert, ()))


@pytest.fixture
def pki() -> Pki:
    return make_pki()


def evidence(position: int, previous: str, key: FileKey, *, subject: str = "Conclusions") -> bytes:
    """A real evidence document at ``position`` of the log."""
    sender = Party("avocat@barreau.example", "Me Avocat", "avocat", "tls-client-certificate")
    greffe = Party.mailbox_of("greffe@tj.example")
    when = T0 + timedelta(minutes=position)
    order = ReceiptOrder(
        events=(Event(EventCode.DEPOT, when, (greffe,)), Event(EventCode.REMISE, when, (greffe,))),
        sender=sender,
        holders=("avocat@barreau.example",),
        dossier=f"RG-{position:05d}",
        submitted=when,
    )
    facts = MessageFacts(f"<{position}@barreau.example>", subject, 100, "ab" * 32, ())
    doc = evidence_document(
        order,
        facts,
        evidence_id=f"ev-{position}",
        issuer="Palais",
        issuer_certificate_sha256=certificate_sha256(key.certificate),
        position=position,
        previous=previous,
    )
    return canonical_json(doc)


def build_leaves(key: FileKey, n: int) -> list[bytes]:
    leaves: list[bytes] = []
    previous = GENESIS
    for position in range(n):
        leaf = evidence(position, previous, key)
        leaves.append(leaf)
        previous = leaf_hash(leaf).hex()
    return leaves


def heads_at(key: FileKey, leaves: Sequence[bytes], sizes: Sequence[int]) -> list[SignedTreeHead]:
    hashes = [leaf_hash(leaf) for leaf in leaves]
    return [
        sign_tree_head(key, size, root_of(hashes[:size]), T0 + timedelta(hours=i))
        for i, size in enumerate(sizes)
    ]


def export(
    dest: Path,
    leaves: Sequence[bytes],
    heads: Sequence[SignedTreeHead],
    certificates: Sequence[x509.Certificate],
) -> Path:
    with LogExport(dest, certificates) as out:
        for leaf in leaves:
            out.add_leaf(leaf)
        for sth in heads:
            out.add_tree_head(*stored(sth))
    return dest


def stored(sth: SignedTreeHead) -> tuple[str, str]:
    """A tree head as the tree_head table keeps it: document text, base64 signature."""
    return sth.document.decode(), base64.b64encode(sth.signature).decode()


def good_log(tmp_path: Path, pki: Pki, n: int = 13, sizes: Sequence[int] = (0, 5, 8, 13)) -> Path:
    leaves = build_leaves(pki.key, n)
    return export(
        tmp_path / "export", leaves, heads_at(pki.key, leaves, sizes), [pki.key.certificate]
    )


def codes(problems: Sequence[Problem]) -> set[ProblemCode]:
    return {p.code for p in problems}


def leaf_lines(log: Path) -> list[bytes]:
    return (log / LEAVES_FILE).read_bytes().splitlines()


def write_leaf_lines(log: Path, lines: Sequence[bytes]) -> None:
    (log / LEAVES_FILE).write_bytes(b"".join(line + b"\n" for line in lines))


def append_tree_heads(log: Path, heads: Sequence[SignedTreeHead]) -> None:
    with (log / TREE_HEADS_FILE).open("ab") as f:
        for sth in heads:
            f.write(tree_head_line(sth) + b"\n")


# -- signed tree heads -------------------------------------------------------------------


def test_tree_head_document_is_canonical_json_of_the_log_state(pki: Pki) -> None:
    root = leaf_hash(b"x")
    signer = certificate_sha256(pki.key.certificate)
    when = datetime(2026, 11, 30, 10, 11, 12, 131415, tzinfo=UTC)
    document = tree_head_document(1, root, when, signer)
    assert document == (
        b'{"log":"palais-evidence","root":"' + root.hex().encode() + b'",'
        b'"signer_certificate_sha256":"' + signer.encode() + b'",'
        b'"size":1,"time":"2026-11-30T10:11:12.131415Z","version":1}'
    )
    head = parse_tree_head(document)
    assert (head.size, head.root, head.time, head.signer_certificate_sha256) == (
        1,
        root,
        when,
        signer,
    )


def test_tree_head_document_refuses_what_cannot_be_said_once() -> None:
    with pytest.raises(ValueError):
        tree_head_document(1, EMPTY_ROOT, datetime(2026, 11, 30), "a" * 64)  # naive time
    with pytest.raises(ValueError):
        tree_head_document(-1, EMPTY_ROOT, T0, "a" * 64)
    with pytest.raises(ValueError):
        tree_head_document(1, b"short", T0, "a" * 64)
    with pytest.raises(ValueError):
        tree_head_document(1, EMPTY_ROOT, T0, "A" * 64)


def test_parse_tree_head_refuses_other_spellings() -> None:
    document = tree_head_document(3, EMPTY_ROOT, T0, "a" * 64)
    data = json.loads(document)
    spaced = json.dumps(data, sort_keys=True).encode()  # same content, spaces
    extra = canonical_json({**data, "comment": "x"})
    other_log = canonical_json({**data, "log": "another-log"})
    for bad in (spaced, extra, other_log, b"not json", canonical_json({**data, "size": True})):
        with pytest.raises(ValueError):
            parse_tree_head(bad)


def test_sign_tree_head_signs_the_document_with_the_evidence_key(pki: Pki) -> None:
    sth = sign_tree_head(pki.key, 0, EMPTY_ROOT, T0)
    assert sth.head.signer_certificate_sha256 == certificate_sha256(pki.key.certificate)
    assert verify_signature(pki.key.certificate, sth.signature, sth.document)
    assert not verify_signature(make_pki().key.certificate, sth.signature, sth.document)
    assert parse_tree_head_line(tree_head_line(sth)) == sth


def test_tree_head_line_refuses_a_bad_signature_encoding(pki: Pki) -> None:
    sth = sign_tree_head(pki.key, 0, EMPTY_ROOT, T0)
    line = json.loads(tree_head_line(sth))
    with pytest.raises(ValueError):
        parse_tree_head_line(canonical_json({**line, "signature": "***"}))
    with pytest.raises(ValueError):
        parse_tree_head_line(canonical_json({"document": line["document"]}))


# -- the export directory -------------------------------------------------------------------


def test_export_directory_format(tmp_path: Path, pki: Pki) -> None:
    leaves = build_leaves(pki.key, 3)
    heads = heads_at(pki.key, leaves, [2, 3])
    intermediate = pki.ca.cert
    log = export(tmp_path / "out", leaves, heads, [pki.key.certificate, intermediate])
    assert sorted(p.name for p in log.iterdir()) == sorted(
        [LEAVES_FILE, TREE_HEADS_FILE, CERTIFICATES_FILE, README_FILE]
    )
    # One line per leaf, exactly the evidence bytes.
    assert (log / LEAVES_FILE).read_bytes() == b"".join(leaf + b"\n" for leaf in leaves)
    lines = (log / TREE_HEADS_FILE).read_bytes().splitlines()
    assert [json.loads(line)["document"].encode() for line in lines] == [h.document for h in heads]
    assert x509.load_pem_x509_certificates((log / CERTIFICATES_FILE).read_bytes()) == [
        pki.key.certificate,
        intermediate,
    ]
    readme = (log / README_FILE).read_text(encoding="utf-8")
    assert "Français" in readme and "English" in readme and "openssl dgst" in readme


def test_export_refuses_a_non_empty_directory(tmp_path: Path, pki: Pki) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "notes.txt").write_text("à garder")
    with pytest.raises(ExportRefused, match="not empty"):
        LogExport(dest, [pki.key.certificate])
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ExportRefused):
        LogExport(afile, [pki.key.certificate])


def test_export_refuses_a_leaf_that_is_not_one_line(tmp_path: Path, pki: Pki) -> None:
    with LogExport(tmp_path / "out", [pki.key.certificate]) as out, pytest.raises(ValueError):
        out.add_leaf(b'{"a":\n1}')


def test_an_interrupted_export_has_no_readme(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(RuntimeError), LogExport(tmp_path / "out", [pki.key.certificate]) as out:
        out.add_leaf(b"{}")
        raise RuntimeError("database gone")
    assert not (tmp_path / "out" / README_FILE).exists()


# -- verify_log: the good log ------------------------------------------------------------------


def test_a_good_log_verifies(tmp_path: Path, pki: Pki) -> None:
    log = good_log(tmp_path, pki)
    verdict = verify_log(log, pki.ca.cert)
    assert verdict.problems == []
    assert verdict.ok
    assert (verdict.leaves, verdict.tree_heads) == (13, 4)
    assert verdict.latest is not None and verdict.latest.size == 13
    assert verdict.to_json()["ok"] is True
    # Without an anchor too.
    assert verify_log(log).ok


def test_an_empty_log_verifies(tmp_path: Path, pki: Pki) -> None:
    log = export(tmp_path / "out", [], heads_at(pki.key, [], [0]), [pki.key.certificate])
    verdict = verify_log(log, pki.ca.cert)
    assert verdict.ok, verdict.problems
    assert verdict.leaves == 0


def test_a_chain_ending_with_the_anchor_verifies(tmp_path: Path, pki: Pki) -> None:
    leaves = build_leaves(pki.key, 2)
    log = export(
        tmp_path / "out", leaves, heads_at(pki.key, leaves, [2]), [pki.key.certificate, pki.ca.cert]
    )
    assert verify_log(log, pki.ca.cert).ok


# -- verify_log: one check at a time ---------------------------------------------------------


def test_a_leaf_removed_in_the_middle(tmp_path: Path, pki: Pki) -> None:
    log = good_log(tmp_path, pki)
    lines = leaf_lines(log)
    del lines[6]
    write_leaf_lines(log, lines)
    verdict = verify_log(log, pki.ca.cert)
    assert not verdict.ok
    assert {
        ProblemCode.LEAF_POSITION,
        ProblemCode.LEAF_PREVIOUS,
        ProblemCode.TREE_HEAD_ROOT,
        ProblemCode.TREE_HEAD_BEYOND_LOG,
    } <= codes(verdict.problems)
    first = next(p for p in verdict.problems if p.code is ProblemCode.LEAF_POSITION)
    assert (first.file, first.line) == (LEAVES_FILE, 7)
    assert "position 7" in first.en and "position 7" in first.fr


def test_the_last_leaf_removed(tmp_path: Path, pki: Pki) -> None:
    log = good_log(tmp_path, pki)
    write_leaf_lines(log, leaf_lines(log)[:-1])
    verdict = verify_log(log)
    # The chain of what is left is intact: only the tree head shows the loss.
    assert codes(verdict.problems) == {ProblemCode.TREE_HEAD_BEYOND_LOG}


def test_a_leaf_altered(tmp_path: Path, pki: Pki) -> None:
    log = good_log(tmp_path, pki)
    lines = leaf_lines(log)
    assert b"Conclusions" in lines[12]
    lines[12] = lines[12].replace(b"Conclusions", b"Conclusion!")
    write_leaf_lines(log, lines)
    verdict = verify_log(log)
    # The last leaf: no later leaf links to it, the signed root catches it.
    assert codes(verdict.problems) == {ProblemCode.TREE_HEAD_ROOT}
    bad = [p for p in verdict.problems if p.code is ProblemCode.TREE_HEAD_ROOT]
    assert [p.line for p in bad] == [4]  # only the head of size 13


def test_a_leaf_altered_in_the_middle_breaks_the_chain(tmp_path: Path, pki: Pki) -> None:
    log = good_log(tmp_path, pki)
    lines = leaf_lines(log)
    lines[3] = lines[3].replace(b"Conclusions", b"Conclusion!")
    write_leaf_lines(log, lines)
    verdict = verify_log(log)
    assert codes(verdict.problems) == {ProblemCode.LEAF_PREVIOUS, ProblemCode.TREE_HEAD_ROOT}
    assert [p.line for p in verdict.problems if p.code is ProblemCode.LEAF_PREVIOUS] == [5]


def test_a_leaf_that_is_not_evidence(tmp_path: Path, pki: Pki) -> None:
    log = good_log(tmp_path, pki)
    lines = leaf_lines(log)
    lines[2] = b'{"log": "nowhere"}'
    write_leaf_lines(log, lines)
    assert ProblemCode.LEAF_MALFORMED in codes(verify_log(log).problems)


def test_a_tree_head_signed_by_another_key(tmp_path: Path, pki: Pki) -> None:
    leaves = build_leaves(pki.key, 4)
    good = heads_at(pki.key, leaves, [4])[0]
    forger = make_pki("AC du faussaire")
    # The same document, signed by another key: the signature does not verify.
    forged = SignedTreeHead(good.document, forger.key.sign(good.document))
    log = export(tmp_path / "a", leaves, [forged], [pki.key.certificate])
    verdict = verify_log(log)
    assert codes(verdict.problems) == {ProblemCode.TREE_HEAD_SIGNATURE, ProblemCode.LEAVES_UNSIGNED}
    assert verdict.latest is None
    # A head that names the other key's certificate is refused for that.
    own = heads_at(forger.key, leaves, [4])
    log = export(tmp_path / "b", leaves, own, [pki.key.certificate])
    assert ProblemCode.TREE_HEAD_SIGNER in codes(verify_log(log).problems)


def test_a_tree_head_with_a_wrong_root(tmp_path: Path, pki: Pki) -> None:
    leaves = build_leaves(pki.key, 6)
    hashes = [leaf_hash(leaf) for leaf in leaves]
    wrong = sign_tree_head(pki.key, 6, root_of(hashes[:5]), T0)  # well signed, wrong root
    log = export(tmp_path / "out", leaves, [wrong], [pki.key.certificate])
    verdict = verify_log(log)
    assert codes(verdict.problems) == {ProblemCode.TREE_HEAD_ROOT}


def test_tree_heads_out_of_order(tmp_path: Path, pki: Pki) -> None:
    leaves = build_leaves(pki.key, 6)
    hashes = [leaf_hash(leaf) for leaf in leaves]
    heads = [
        sign_tree_head(pki.key, 6, root_of(hashes), T0),
        sign_tree_head(pki.key, 3, root_of(hashes[:3]), T0 + timedelta(hours=1)),
    ]
    log = export(tmp_path / "out", leaves, heads, [pki.key.certificate])
    verdict = verify_log(log)
    assert codes(verdict.problems) == {ProblemCode.TREE_HEAD_ORDER}
    # Time going backwards is as wrong as size going backwards.
    heads = [
        sign_tree_head(pki.key, 3, root_of(hashes[:3]), T0 + timedelta(hours=1)),
        sign_tree_head(pki.key, 6, root_of(hashes), T0),
    ]
    log = export(tmp_path / "out2", leaves, heads, [pki.key.certificate])
    assert codes(verify_log(log).problems) == {ProblemCode.TREE_HEAD_ORDER}


def test_leaves_after_the_last_tree_head_are_reported(tmp_path: Path, pki: Pki) -> None:
    log = good_log(tmp_path, pki, n=13, sizes=(0, 5, 10))
    verdict = verify_log(log)
    assert codes(verdict.problems) == {ProblemCode.LEAVES_UNSIGNED}
    (problem,) = verdict.problems
    assert problem.line == 11 and "3 " in problem.en and "position 10" in problem.en


def test_the_chain_to_a_wrong_anchor(tmp_path: Path, pki: Pki) -> None:
    log = good_log(tmp_path, pki)
    other = certbuilder.CertificateAuthority.create(certbuilder.name("AC de test", country="FR"))
    # Same name as the real CA, another key: only the signature tells them apart.
    verdict = verify_log(log, other.cert)
    assert codes(verdict.problems) == {ProblemCode.CHAIN_UNTRUSTED}
    assert verify_log(log, pki.ca.cert).ok


def test_an_anchor_that_is_not_a_ca(tmp_path: Path, pki: Pki) -> None:
    log = good_log(tmp_path, pki)
    # The evidence certificate as its own anchor: not a CA, not its issuer.
    verdict = verify_log(log, pki.key.certificate)
    assert ProblemCode.CHAIN_UNTRUSTED in codes(verdict.problems)


def test_a_certificate_not_valid_when_it_signed(tmp_path: Path) -> None:
    # Valid from half an hour after T0: the tree head signed at T0 predates it.
    pki = make_pki(
        validity=certbuilder.Validity(T0 + timedelta(minutes=30), T0 + timedelta(days=365))
    )
    log = good_log(tmp_path, pki, sizes=(5, 13))  # at T0 and T0 + 1 h
    verdict = verify_log(log, pki.ca.cert)
    assert codes(verdict.problems) == {ProblemCode.CERTIFICATE_NOT_VALID}
    assert timestamp(T0) in verdict.problems[0].en


def test_missing_files_are_unreadable(tmp_path: Path, pki: Pki) -> None:
    for name in (LEAVES_FILE, TREE_HEADS_FILE, CERTIFICATES_FILE):
        log = good_log(tmp_path / name, pki)
        (log / name).unlink()
        verdict = verify_log(log)
        assert ProblemCode.UNREADABLE in codes(verdict.problems), name
        assert any(p.file == name for p in verdict.problems)


def test_a_broken_order_is_reported_a_few_times_then_counted(tmp_path: Path, pki: Pki) -> None:
    log = good_log(tmp_path, pki, n=40, sizes=(40,))
    write_leaf_lines(log, leaf_lines(log)[1:])
    verdict = verify_log(log)
    positions = [p for p in verdict.problems if p.code is ProblemCode.LEAF_POSITION]
    # 39 misplaced leaves: the first ten, then "29 more".
    assert len(positions) == 11
    assert "29 more" in positions[-1].en and "29 autre" in positions[-1].fr


def test_problem_texts_are_in_french_and_english(tmp_path: Path, pki: Pki) -> None:
    log = good_log(tmp_path, pki)
    lines = leaf_lines(log)
    del lines[0]
    write_leaf_lines(log, lines)
    verdict = verify_log(log, make_pki("Autre AC").ca.cert)
    assert verdict.problems
    for problem in verdict.problems:
        assert problem.fr and problem.en and problem.fr != problem.en
    assert json.loads(json.dumps(verdict.to_json()))["problems"][0]["code"] == "leaf-position"


# -- check_inclusion ------------------------------------------------------------------------


def test_every_receipt_of_a_good_log_is_included(tmp_path: Path, pki: Pki) -> None:
    leaves = build_leaves(pki.key, 13)
    log = export(
        tmp_path / "out", leaves, heads_at(pki.key, leaves, [5, 8, 13]), [pki.key.certificate]
    )
    for position, leaf in enumerate(leaves):
        verdict = check_inclusion(log, leaf)
        assert verdict.ok, (position, verdict.problems)
        assert verdict.position == position
        assert verdict.tree_head is not None and verdict.tree_head.size == 13
        # The proof it reports is one a third party can check on its own.
        assert verify_inclusion(
            leaf_hash(leaf), position, 13, verdict.proof, verdict.tree_head.root
        )
        assert verdict.to_json()["ok"] is True


def test_a_receipt_not_included(tmp_path: Path, pki: Pki) -> None:
    leaves = build_leaves(pki.key, 6)
    log = export(tmp_path / "out", leaves, heads_at(pki.key, leaves, [6]), [pki.key.certificate])
    # Evidence the gateway never logged, claiming an existing position.
    stranger = evidence(3, leaf_hash(leaves[2]).hex(), pki.key, subject="Faux")
    verdict = check_inclusion(log, stranger)
    assert codes(verdict.problems) == {ProblemCode.LEAF_DIFFERS, ProblemCode.INCLUSION_PROOF}
    # Claiming a position the log does not have.
    beyond = evidence(9, leaf_hash(leaves[5]).hex(), pki.key)
    assert codes(check_inclusion(log, beyond).problems) == {
        ProblemCode.NOT_YET_SIGNED,
        ProblemCode.NOT_IN_LOG,
    }
    append_tree_heads(log, [sign_tree_head(pki.key, 10, EMPTY_ROOT, T0 + timedelta(days=1))])
    assert ProblemCode.NOT_IN_LOG in codes(check_inclusion(log, beyond).problems)


def test_a_receipt_after_the_last_tree_head(tmp_path: Path, pki: Pki) -> None:
    leaves = build_leaves(pki.key, 6)
    log = export(tmp_path / "out", leaves, heads_at(pki.key, leaves, [4]), [pki.key.certificate])
    assert check_inclusion(log, leaves[3]).ok
    verdict = check_inclusion(log, leaves[4])
    assert codes(verdict.problems) == {ProblemCode.NOT_YET_SIGNED}


def test_a_receipt_against_a_tree_head_with_a_wrong_root(tmp_path: Path, pki: Pki) -> None:
    leaves = build_leaves(pki.key, 6)
    hashes = [leaf_hash(leaf) for leaf in leaves]
    wrong = sign_tree_head(pki.key, 6, Frontier.of(hashes[1:]).root(), T0)
    log = export(tmp_path / "out", leaves, [wrong], [pki.key.certificate])
    verdict = check_inclusion(log, leaves[2])
    assert codes(verdict.problems) == {ProblemCode.INCLUSION_PROOF}


def test_a_receipt_under_a_forged_tree_head(tmp_path: Path, pki: Pki) -> None:
    leaves = build_leaves(pki.key, 6)
    good = heads_at(pki.key, leaves, [6])[0]
    forged = SignedTreeHead(good.document, make_pki().key.sign(good.document))
    log = export(tmp_path / "out", leaves, [forged], [pki.key.certificate])
    assert codes(check_inclusion(log, leaves[1]).problems) == {ProblemCode.NOT_YET_SIGNED}


def test_a_receipt_whose_leaf_was_removed(tmp_path: Path, pki: Pki) -> None:
    leaves = build_leaves(pki.key, 6)
    log = export(tmp_path / "out", leaves, heads_at(pki.key, leaves, [6]), [pki.key.certificate])
    write_leaf_lines(log, leaf_lines(log)[:5])
    verdict = check_inclusion(log, leaves[5])
    assert codes(verdict.problems) == {ProblemCode.NOT_IN_LOG}
    verdict = check_inclusion(log, leaves[2])
    assert codes(verdict.problems) == {ProblemCode.TREE_HEAD_BEYOND_LOG}


def test_something_that_is_not_evidence(tmp_path: Path, pki: Pki) -> None:
    log = good_log(tmp_path, pki)
    for bad in (b"", b"[1]", b'{"log": {"position": -1, "previous": ""}}', b"\xff"):
        verdict = check_inclusion(log, bad)
        assert codes(verdict.problems) == {ProblemCode.EVIDENCE_MALFORMED}
        assert verdict.position is None


# -- the writer (storage) and the reader (pki) agree on the format ---------------------------


def test_storage_and_pki_name_the_same_files() -> None:
    for name in ("LEAVES_FILE", "TREE_HEADS_FILE", "CERTIFICATES_FILE", "README_FILE"):
        assert getattr(evidence_export, name) == getattr(evidencelog, name), name


def test_the_written_tree_head_line_is_the_one_pki_reads(tmp_path: Path, pki: Pki) -> None:
    sth = sign_tree_head(pki.key, 0, EMPTY_ROOT, T0)
    export(tmp_path / "out", [], [sth], [pki.key.certificate])
    assert (tmp_path / "out" / TREE_HEADS_FILE).read_bytes() == tree_head_line(sth) + b"\n"


def test_export_refuses_a_stored_signature_that_is_not_base64(tmp_path: Path, pki: Pki) -> None:
    sth = sign_tree_head(pki.key, 0, EMPTY_ROOT, T0)
    with LogExport(tmp_path / "out", [pki.key.certificate]) as out, pytest.raises(ValueError):
        out.add_tree_head(sth.document.decode(), "not base64!")


# -- export_log: from the database ------------------------------------------------------------


def store(engine: Engine, leaves: Sequence[bytes], heads: Sequence[SignedTreeHead]) -> None:
    """Rows as the gateway writes them when it appends receipts and signs heads."""
    with engine.begin() as conn:
        if leaves:
            conn.execute(
                insert(table(EvidenceLog)),
                [
                    {
                        "position": i,
                        "evidence_id": f"ev-{i}",
                        "events": "depot,remise",
                        "about": None,
                        "holder": "avocat@barreau.example",
                        "dossier": f"RG-{i:05d}",
                        "evidence": leaf.decode(),
                        "leaf_hash": leaf_hash(leaf).hex(),
                        "receipt_message": None,
                        "receipt": b"",
                        "created": T0,
                    }
                    for i, leaf in enumerate(leaves)
                ],
            )
        for sth in heads:
            head = sth.head
            document, signature = stored(sth)
            conn.execute(
                insert(table(TreeHead)).values(
                    size=head.size,
                    root=head.root.hex(),
                    signed_at=head.time,
                    document=document,
                    signature=signature,
                )
            )


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database at the head revision, with its evidence tables empty (PostgreSQL:
    a server the tests start, skipped where its binaries are not installed)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    migrate_database(url)
    engine = make_engine(url, writer=False)
    yield engine
    engine.dispose()


def test_export_log_writes_a_log_that_verifies(tmp_path: Path, pki: Pki, database: Engine) -> None:
    # More leaves and heads than one fetch: the export reads in batches.
    leaves = build_leaves(pki.key, 2100)
    heads = heads_at(pki.key, leaves, [*range(0, 2100, 7), 2100])
    store(database, leaves, heads)
    dest = tmp_path / "export"
    summary = export_log(database, dest, [pki.key.certificate, pki.ca.cert])
    assert (summary.leaves, summary.tree_heads, summary.signed_size) == (2100, len(heads), 2100)
    assert summary.unsigned == 0
    assert summary.leaf_hash_mismatches == () and summary.misplaced == ()
    assert (dest / LEAVES_FILE).read_bytes() == b"".join(leaf + b"\n" for leaf in leaves)
    assert (dest / README_FILE).exists()
    verdict = verify_log(dest, pki.ca.cert)
    assert verdict.ok, verdict.problems
    assert verdict.leaves == 2100
    for position in (0, 1, 1000, 2099):
        assert check_inclusion(dest, leaves[position]).ok


def test_export_log_of_an_empty_log(tmp_path: Path, pki: Pki, database: Engine) -> None:
    summary = export_log(database, tmp_path / "export", [pki.key.certificate])
    assert (summary.leaves, summary.tree_heads, summary.signed_size) == (0, 0, None)
    assert verify_log(tmp_path / "export").ok


def test_export_log_refuses_a_non_empty_directory(
    tmp_path: Path, pki: Pki, database: Engine
) -> None:
    dest = tmp_path / "export"
    dest.mkdir()
    (dest / "old.txt").write_text("x")
    with pytest.raises(ExportRefused):
        export_log(database, dest, [pki.key.certificate])
    assert [p.name for p in dest.iterdir()] == ["old.txt"]


def test_export_log_reports_what_the_database_shows_wrong(
    tmp_path: Path, pki: Pki, database: Engine
) -> None:
    leaves = build_leaves(pki.key, 5)
    store(database, leaves, heads_at(pki.key, leaves, [3]))
    with database.begin() as conn:
        conn.execute(
            update(table(EvidenceLog))
            .where(table(EvidenceLog).c.position == 1)
            .values(leaf_hash="0" * 64)
        )
        conn.execute(
            update(table(EvidenceLog)).where(table(EvidenceLog).c.position == 4).values(position=7)
        )
    summary = export_log(database, tmp_path / "export", [pki.key.certificate])
    assert summary.leaf_hash_mismatches == (1,)
    assert summary.misplaced == (7,)
    assert summary.unsigned == 2
    # The evidence bytes themselves are intact (they say position 4): the
    # exported log is still right, only its last two leaves are unsigned.
    verdict = verify_log(tmp_path / "export")
    assert codes(verdict.problems) == {ProblemCode.LEAVES_UNSIGNED}


def test_export_log_fails_on_a_stored_signature_that_is_not_base64(
    tmp_path: Path, pki: Pki, database: Engine
) -> None:
    leaves = build_leaves(pki.key, 2)
    store(database, leaves, heads_at(pki.key, leaves, [2]))
    with database.begin() as conn:
        conn.execute(update(table(TreeHead)).values(signature="%%%"))
    with pytest.raises(ExportFailed, match="size 2"):
        export_log(database, tmp_path / "export", [pki.key.certificate])
    assert not (tmp_path / "export" / README_FILE).exists()


# -- the command line ------------------------------------------------------------------------


def palais(*argv: str | Path) -> int:
    """``palais evidence ...`` as the main parser will run it."""
    parser = argparse.ArgumentParser(prog="palais")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    status: int = args.func(args)
    return status


@dataclass
class Instance:
    root: Path
    leaves: list[bytes]


@pytest.fixture
def instance(tmp_path: Path, pki: Pki) -> Iterator[Instance]:
    """An instance directory with default settings: palais.db, pki/evidence.pem."""
    root = tmp_path / "instance"
    (root / "pki").mkdir(parents=True)
    (root / "palais.toml").write_text("")
    certbuilder.write_certificate(root / "pki" / "evidence.pem", pki.key.certificate)
    url = f"sqlite:///{root / 'palais.db'}"
    migrate_database(url)
    engine = make_engine(url, writer=True)
    leaves = build_leaves(pki.key, 9)
    store(engine, leaves, heads_at(pki.key, leaves, [4, 9]))
    engine.dispose()
    yield Instance(root, leaves)


def test_every_problem_code_has_an_exit_status() -> None:
    assert set(EXIT_STATUS) == set(ProblemCode)
    assert 0 not in EXIT_STATUS.values() and 1 not in EXIT_STATUS.values()


def test_cli_export_then_verify(
    tmp_path: Path, pki: Pki, instance: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    assert palais("evidence", "export", out, "-d", instance.root) == 0
    said = capsys.readouterr().out
    assert "9 feuille(s)" in said and "9 leaf/leaves" in said
    anchor = tmp_path / "ca.pem"
    certbuilder.write_certificate(anchor, pki.ca.cert)
    receipt = tmp_path / "receipt.json"
    receipt.write_bytes(instance.leaves[6] + b"\n")
    assert palais("evidence", "verify", out, "--trust", anchor, "--receipt", receipt) == 0
    said = capsys.readouterr().out
    assert "VALIDE" in said and "VALID: every check passed." in said
    assert "position 6" in said
    assert palais("evidence", "verify", out, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["exit_status"] == 0
    assert report["log"]["leaves"] == 9 and report["receipt"] is None


def test_cli_export_finds_the_instance_in_palais_home(
    tmp_path: Path, instance: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PALAIS_HOME", str(instance.root))
    assert palais("evidence", "export", tmp_path / "export") == 0
    assert verify_log(tmp_path / "export").ok
    monkeypatch.delenv("PALAIS_HOME")
    monkeypatch.chdir(instance.root)
    assert palais("evidence", "export", tmp_path / "export2") == 0


def test_cli_export_refusals(
    tmp_path: Path, instance: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    assert palais("evidence", "export", taken, "-d", instance.root) == 2
    assert "not empty" in capsys.readouterr().err
    assert palais("evidence", "export", tmp_path / "a", "-d", tmp_path / "nowhere") == 2
    (instance.root / "palais.db").unlink()
    assert palais("evidence", "export", tmp_path / "b", "-d", instance.root) == 2
    assert "no database" in capsys.readouterr().err
    assert not (instance.root / "palais.db").exists()  # not created by the attempt
    (instance.root / "pki" / "evidence.pem").unlink()
    assert palais("evidence", "export", tmp_path / "c", "-d", instance.root) == 2


def exported(tmp_path: Path, instance: Instance) -> Path:
    out = tmp_path / "export"
    assert palais("evidence", "export", out, "-d", instance.root) == 0
    return out


def test_cli_verify_status_per_failure(
    tmp_path: Path, pki: Pki, instance: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    out = exported(tmp_path, instance)
    lines = leaf_lines(out)

    write_leaf_lines(out, [lines[0], lines[2], *lines[2:]])  # a leaf replaced by another
    assert palais("evidence", "verify", out) == 3
    said = capsys.readouterr().out
    assert "[leaf-position] (leaves.jsonl:2)" in said and "NOT VALID (status 3)" in said

    write_leaf_lines(out, lines[:-1])  # the last leaf removed
    assert palais("evidence", "verify", out) == 5
    write_leaf_lines(out, lines)
    assert palais("evidence", "verify", out) == 0

    wrong = tmp_path / "wrong-ca.pem"
    certbuilder.write_certificate(wrong, make_pki("Autre AC").ca.cert)
    assert palais("evidence", "verify", out, "--trust", wrong) == 8

    capsys.readouterr()
    stranger = tmp_path / "stranger.json"
    stranger.write_bytes(evidence(3, leaf_hash(instance.leaves[2]).hex(), pki.key, subject="X"))
    assert palais("evidence", "verify", out, "--receipt", stranger, "--json") == 9
    report = json.loads(capsys.readouterr().out)
    assert report["exit_status"] == 9
    assert {p["code"] for p in report["receipt"]["problems"]} == {
        "leaf-differs",
        "inclusion-proof",
    }


def test_cli_verify_status_of_tree_head_failures(
    tmp_path: Path, pki: Pki, instance: Instance
) -> None:
    out = exported(tmp_path, instance)
    heads = (out / TREE_HEADS_FILE).read_bytes()
    # A head of size 9 forged by another key.
    good = heads_at(pki.key, instance.leaves, [9])[0]
    forged = SignedTreeHead(good.document, make_pki().key.sign(good.document))
    append_tree_heads(out, [forged])
    assert palais("evidence", "verify", out) == 4
    # A head of size 5 after the head of size 9: the log would have shrunk.
    (out / TREE_HEADS_FILE).write_bytes(heads)
    append_tree_heads(out, heads_at(pki.key, instance.leaves, [5]))
    assert palais("evidence", "verify", out) == 6
    # Leaves after the last head.
    (out / TREE_HEADS_FILE).write_bytes(heads.splitlines(keepends=True)[0])
    assert palais("evidence", "verify", out) == 7


def test_cli_verify_unreadable_input(
    tmp_path: Path, instance: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    out = exported(tmp_path, instance)
    assert palais("evidence", "verify", tmp_path / "nowhere") == 2
    assert palais("evidence", "verify", out, "--trust", tmp_path / "nowhere.pem") == 2
    assert palais("evidence", "verify", out, "--receipt", tmp_path / "nowhere.json") == 2
    (tmp_path / "not-evidence.json").write_text("bonjour")
    assert palais("evidence", "verify", out, "--receipt", tmp_path / "not-evidence.json") == 2
    (out / CERTIFICATES_FILE).unlink()
    assert palais("evidence", "verify", out) == 2
    assert "[unreadable] (evidence.pem)" in capsys.readouterr().out
