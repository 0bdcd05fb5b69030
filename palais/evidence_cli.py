"""`palais evidence export` and `palais evidence verify`: the evidence log, offline.

``export`` writes an instance's evidence log into a new directory that
anyone can check without the gateway; ``verify`` checks such a directory
(and, with ``--receipt``, that one receipt is in it), saying what it found
in French and in English. The exit status says which kind of check failed,
so that a script can tell tampering from an unreadable file; the one table
that maps problem codes to statuses is ``EXIT_STATUS``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Final

from cryptography import x509

from palais.config import ConfigError, Settings, load_settings
from palais.pki.evidencelog import (
    InclusionVerdict,
    LogVerdict,
    Problem,
    ProblemCode,
    check_inclusion,
    verify_log,
)

OK: Final = 0
FAILED: Final = 1  # export: the log could not be written
UNREADABLE: Final = 2  # usage, or input that cannot be read
LEAVES: Final = 3
SIGNATURE: Final = 4
ROOT: Final = 5
ORDER: Final = 6
UNSIGNED: Final = 7
CERTIFICATE: Final = 8
RECEIPT: Final = 9

EXIT_STATUS: Final[dict[ProblemCode, int]] = {
    ProblemCode.UNREADABLE: UNREADABLE,
    ProblemCode.EVIDENCE_MALFORMED: UNREADABLE,
    ProblemCode.LEAF_MALFORMED: LEAVES,
    ProblemCode.LEAF_POSITION: LEAVES,
    ProblemCode.LEAF_PREVIOUS: LEAVES,
    ProblemCode.TREE_HEAD_MALFORMED: SIGNATURE,
    ProblemCode.TREE_HEAD_SIGNER: SIGNATURE,
    ProblemCode.TREE_HEAD_SIGNATURE: SIGNATURE,
    ProblemCode.TREE_HEAD_ROOT: ROOT,
    ProblemCode.TREE_HEAD_BEYOND_LOG: ROOT,
    ProblemCode.TREE_HEAD_ORDER: ORDER,
    ProblemCode.LEAVES_UNSIGNED: UNSIGNED,
    ProblemCode.CERTIFICATE_NOT_VALID: CERTIFICATE,
    ProblemCode.CHAIN_UNTRUSTED: CERTIFICATE,
    ProblemCode.NOT_IN_LOG: RECEIPT,
    ProblemCode.LEAF_DIFFERS: RECEIPT,
    ProblemCode.NOT_YET_SIGNED: RECEIPT,
    ProblemCode.INCLUSION_PROOF: RECEIPT,
}

VERIFY_EPILOG: Final = """\
exit status / code de sortie:
  0  every check passed / toutes les vérifications sont passées
  2  usage error, or a file that cannot be read / erreur d'usage ou fichier illisible
  3  leaves: one is malformed, misplaced, or not chained to the previous one
     / feuilles : mal formée, déplacée ou non chaînée à la précédente
  4  a tree head is malformed, or not signed by evidence.pem's key
     / tête d'arbre mal formée ou non signée par la clé d'evidence.pem
  5  a tree head's root is not that of the leaves (altered or removed leaves)
     / racine d'une tête d'arbre différente de celle des feuilles (modifiées, retirées)
  6  tree heads go back in size or time / têtes d'arbre qui reculent (taille, date)
  7  leaves after the last signed tree head / feuilles après la dernière tête signée
  8  the certificate is not valid when it signed, or does not chain to --trust
     / certificat non valable quand il a signé, ou sans chaîne vers --trust
  9  the --receipt is not in the log under a signed tree head
     / l'accusé --receipt ne figure pas dans le journal sous une tête signée
When several kinds fail, the smallest status is returned.
/ Si plusieurs vérifications échouent, le plus petit code est renvoyé.
"""

EXPORT_EPILOG: Final = """\
exit status / code de sortie:
  0  written / écrit
  1  the log could not be written / le journal n'a pas pu être écrit
  2  usage error, unreadable configuration, certificate or database, or OUT not empty
     / erreur d'usage, configuration, certificat ou base illisible, ou OUT non vide
"""


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``evidence export`` and ``evidence verify`` on the ``palais`` parser."""
    evidence = sub.add_parser(
        "evidence",
        help="export and check the evidence log (receipts' Merkle tree and signed tree heads)",
        description="The evidence log of the receipts (accusés de réception), offline.",
    )
    commands = evidence.add_subparsers(dest="evidence_command", required=True)

    p = commands.add_parser(
        "export",
        help="write the evidence log into a new directory",
        description="Write an instance's evidence log into OUT (new or empty): leaves, signed"
        " tree heads, evidence certificate and a README in French and English.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", type=Path, metavar="OUT", help="the directory to create")
    p.add_argument(
        "-d",
        "--dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="instance directory (or its palais.toml); default $PALAIS_HOME, else the current"
        " directory",
    )
    p.set_defaults(func=cmd_export)

    p = commands.add_parser(
        "verify",
        help="check an exported evidence log",
        description="Check an exported evidence log: leaves chained in order, tree heads"
        " signed and matching the leaves, and optionally the certificate's chain and one"
        " receipt's inclusion.",
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", type=Path, metavar="OUT", help="the exported directory")
    p.add_argument(
        "--trust",
        type=Path,
        metavar="CA.pem",
        help="the trust anchor the evidence certificate must chain to",
    )
    p.add_argument(
        "--receipt",
        type=Path,
        metavar="EVIDENCE.json",
        help="a receipt's evidence document (its exact bytes) to find in the log",
    )
    p.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    p.set_defaults(func=cmd_verify)


# -- export ------------------------------------------------------------------------------


def instance_dir(given: Path | None) -> Path:
    """-d DIR, else $PALAIS_HOME, else the current directory."""
    if given is not None:
        return given
    home = os.environ.get("PALAIS_HOME")
    return Path(home) if home else Path.cwd()


def _settings(root: Path) -> Settings:
    return load_settings(root / "palais.toml" if root.is_dir() else root)


def cmd_export(args: argparse.Namespace) -> int:
    from palais.instance import sqlite_path
    from palais.pki.signing import load_certificates
    from palais.storage.engine import make_engine
    from palais.storage.evidence_export import ExportFailed, ExportRefused, export_log
    from palais.storage.migrate import SchemaMismatch, check_revision

    def fail(status: int, message: str) -> int:
        print(f"palais evidence export: {message}", file=sys.stderr)
        return status

    try:
        settings = _settings(instance_dir(args.dir))
    except ConfigError as e:
        return fail(UNREADABLE, str(e))
    certificate = settings.evidence.certificate
    if not certificate.is_absolute():
        certificate = settings.root / certificate
    try:
        certificates = load_certificates(certificate)
    except (OSError, ValueError) as e:
        return fail(UNREADABLE, f"cannot read the evidence certificate {certificate}: {e}")
    if not certificates:
        return fail(UNREADABLE, f"{certificate} holds no certificate")
    url = settings.database_url()
    database = sqlite_path(url)
    if database is not None and not database.is_file():
        # Opening it would create an empty database.
        return fail(UNREADABLE, f"no database at {database}")
    engine = make_engine(url, writer=False)
    try:
        check_revision(engine)
        summary = export_log(engine, args.out, certificates)
    except SchemaMismatch as e:
        return fail(UNREADABLE, str(e))
    except ExportRefused as e:
        return fail(UNREADABLE, str(e))
    except (ExportFailed, OSError) as e:
        return fail(FAILED, f"the export is incomplete: {e}")
    finally:
        engine.dispose()

    print(
        f"Journal des preuves exporté dans {args.out} : {summary.leaves} feuille(s),"
        f" {summary.tree_heads} tête(s) d'arbre signée(s)."
    )
    print(
        f"Evidence log exported to {args.out}: {summary.leaves} leaf/leaves,"
        f" {summary.tree_heads} signed tree head(s)."
    )
    if summary.unsigned:
        print(
            f"Attention : les {summary.unsigned} dernière(s) feuille(s) ne sont encore couvertes"
            " par aucune tête d'arbre signée. / Warning: the last"
            f" {summary.unsigned} leaf/leaves are not yet covered by a signed tree head.",
            file=sys.stderr,
        )
    if summary.leaf_hash_mismatches or summary.misplaced:
        print(
            "Attention : la base montre des irrégularités (empreintes enregistrées différentes"
            f" aux positions {list(summary.leaf_hash_mismatches)}, positions inattendues"
            f" {list(summary.misplaced)}). / Warning: the database shows irregularities (stored"
            f" leaf hashes differ at positions {list(summary.leaf_hash_mismatches)}, unexpected"
            f" positions {list(summary.misplaced)}).",
            file=sys.stderr,
        )
    print(f"Vérifier / check: palais evidence verify {args.out}")
    return OK


# -- verify ------------------------------------------------------------------------------


def exit_status(problems: list[Problem]) -> int:
    """The status of the most basic kind of failure among ``problems`` (0 without any)."""
    return min((EXIT_STATUS[p.code] for p in problems), default=OK)


def cmd_verify(args: argparse.Namespace) -> int:
    out: Path = args.out
    if not out.is_dir():
        print(f"palais evidence verify: {out} is not a directory", file=sys.stderr)
        return UNREADABLE
    anchor: x509.Certificate | None = None
    if args.trust is not None:
        try:
            anchors = x509.load_pem_x509_certificates(args.trust.read_bytes())
        except (OSError, ValueError) as e:
            print(f"palais evidence verify: cannot read {args.trust}: {e}", file=sys.stderr)
            return UNREADABLE
        if len(anchors) != 1:
            print(
                f"palais evidence verify: {args.trust} must hold exactly one certificate,"
                f" the trust anchor (it holds {len(anchors)})",
                file=sys.stderr,
            )
            return UNREADABLE
        anchor = anchors[0]
    evidence: bytes | None = None
    if args.receipt is not None:
        try:
            # Canonical JSON never ends with a newline; an editor may add one.
            evidence = args.receipt.read_bytes().rstrip(b"\r\n")
        except OSError as e:
            print(f"palais evidence verify: cannot read {args.receipt}: {e}", file=sys.stderr)
            return UNREADABLE

    verdict = verify_log(out, anchor)
    inclusion = check_inclusion(out, evidence) if evidence is not None else None
    problems = verdict.problems + (inclusion.problems if inclusion is not None else [])
    status = exit_status(problems)
    if args.json:
        print(json.dumps(_json_report(verdict, inclusion, status), ensure_ascii=False))
    else:
        print(_text_report(out, verdict, inclusion, status))
    return status


def _json_report(
    verdict: LogVerdict, inclusion: InclusionVerdict | None, status: int
) -> dict[str, Any]:
    return {
        "ok": status == OK,
        "exit_status": status,
        "log": verdict.to_json(),
        "receipt": inclusion.to_json() if inclusion is not None else None,
    }


def _text_report(
    out: Path, verdict: LogVerdict, inclusion: InclusionVerdict | None, status: int
) -> str:
    latest = verdict.latest
    lines = [
        f"Journal des preuves {out} : {verdict.leaves} feuille(s), {verdict.tree_heads} tête(s)"
        " d'arbre.",
        f"Evidence log {out}: {verdict.leaves} leaf/leaves, {verdict.tree_heads} tree head(s).",
    ]
    if latest is not None:
        lines.append(
            f"Dernière tête signée / latest signed tree head: taille/size {latest.size},"
            f" racine/root {latest.root.hex()}, {latest.time.isoformat()}"
        )
    if inclusion is not None and inclusion.ok and inclusion.tree_head is not None:
        lines.append(
            f"Accusé à la position {inclusion.position}, inclus dans la tête de taille"
            f" {inclusion.tree_head.size}. / Receipt at position {inclusion.position}, included"
            f" in the tree head of size {inclusion.tree_head.size}."
        )
    problems = verdict.problems + (inclusion.problems if inclusion is not None else [])
    for p in problems:
        where = f" ({p.file}{f':{p.line}' if p.line is not None else ''})" if p.file else ""
        lines.append(f"- [{p.code.value}]{where}")
        lines.append(f"    FR : {p.fr}")
        lines.append(f"    EN: {p.en}")
    if status == OK:
        anchored = (
            " (chaîne vers l'autorité vérifiée / chain to the anchor checked)"
            if verdict.anchored
            else " (sans --trust, la chaîne du certificat n'est pas vérifiée / without --trust,"
            " the certificate's chain is not checked)"
        )
        lines.append(f"VALIDE : toutes les vérifications sont passées{anchored}.")
        lines.append("VALID: every check passed.")
    else:
        lines.append(f"NON VALIDE (code {status}). / NOT VALID (status {status}).")
    return "\n".join(lines)
