"""``palais verify-receipt``: check an accusé de réception offline.

    palais verify-receipt ACCUSE.eml [--message ORIGINAL.eml] [--trust AC.pem]
                          [--log JOURNAL/] [--json]

Anyone holding a receipt runs it, without the gateway: the trust anchor (the
CA that issued the evidence certificate) comes from ``--trust`` or
``$PALAIS_EVIDENCE_CA``. The exit status says what failed first
(``palais.pki.verify.ExitStatus``): 0 valid, 2 unreadable input or usage,
3 not a Palais receipt, 4 signature, 5 chain, 6 message, 7 attachment, 8 log.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import Final, TextIO

from cryptography import x509

from palais.pki.verify import (
    ExitStatus,
    Outcome,
    Verdict,
    evidence_summary,
    status_text,
    verify_receipt,
)

__all__ = ["TRUST_ENV", "add_command", "main", "render_verdict", "run"]

#: The environment variable naming the evidence CA when --trust is not given.
TRUST_ENV: Final = "PALAIS_EVIDENCE_CA"

_MARKS: Final = {Outcome.PASSED: "✓", Outcome.FAILED: "✗", Outcome.SKIPPED: "–"}
_DESCRIPTION: Final = (
    "Vérifie un accusé de réception Palais hors ligne : signature, chaîne de certificats,"
    " preuve, message original, journal. / Check a Palais receipt offline: signature,"
    " certificate chain, evidence, original message, log."
)
_EPILOG: Final = (
    "Statuts / exit statuses: 0 valide/valid, 2 illisible/unreadable or usage,"
    " 3 mal formé/malformed, 4 signature, 5 chaîne/chain, 6 message, 7 pièce jointe/attachment,"
    " 8 journal/log."
)


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("receipt", metavar="RECEIPT.eml", help="l'accusé / the receipt mail")
    parser.add_argument(
        "--message",
        metavar="ORIGINAL.eml",
        help="le message original, tel qu'enregistré / the original message, as saved",
    )
    parser.add_argument(
        "--trust",
        metavar="CA.pem",
        action="append",
        help=(
            "l'autorité de la clé de preuve (répétable) ; par défaut $PALAIS_EVIDENCE_CA /"
            " the evidence key's CA (repeatable); default $PALAIS_EVIDENCE_CA"
        ),
    )
    parser.add_argument(
        "--log",
        metavar="DIR",
        help="un journal de preuve exporté / an exported evidence log",
    )
    parser.add_argument("--json", action="store_true", help="verdict en JSON / verdict as JSON")


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``verify-receipt`` on ``palais``'s sub-commands."""
    parser = sub.add_parser(
        "verify-receipt",
        help="vérifier un accusé de réception / check a receipt",
        description=_DESCRIPTION,
        epilog=_EPILOG,
    )
    _configure(parser)
    parser.set_defaults(func=run)


def _fail(message_fr: str, message_en: str) -> int:
    print(f"palais verify-receipt: {message_fr}\n  {message_en}", file=sys.stderr)
    return int(ExitStatus.UNREADABLE)


def run(args: argparse.Namespace) -> int:
    """Run the command for parsed arguments; returns the exit status."""
    trust_paths: list[str] = list(args.trust or [])
    if not trust_paths and os.environ.get(TRUST_ENV):
        trust_paths = [os.environ[TRUST_ENV]]
    if not trust_paths:
        # Without an anchor, a signature proves nothing: anyone can sign.
        return _fail(
            f"indiquez l'autorité de la clé de preuve avec --trust AC.pem ou ${TRUST_ENV}.",
            f"give the evidence key's CA with --trust CA.pem or ${TRUST_ENV}.",
        )
    anchors: list[x509.Certificate] = []
    for path in trust_paths:
        try:
            anchors += x509.load_pem_x509_certificates(Path(path).read_bytes())
        except OSError as error:
            return _fail(
                f"autorité illisible {path} : {error.strerror}",
                f"cannot read the CA {path}: {error.strerror}",
            )
        except ValueError:
            return _fail(
                f"{path} ne contient pas de certificat PEM.",
                f"{path} holds no PEM certificate.",
            )
    try:
        receipt = Path(args.receipt).read_bytes()
    except OSError as error:
        return _fail(
            f"accusé illisible {args.receipt} : {error.strerror}",
            f"cannot read the receipt {args.receipt}: {error.strerror}",
        )
    original: bytes | None = None
    if args.message is not None:
        try:
            original = Path(args.message).read_bytes()
        except OSError as error:
            return _fail(
                f"message illisible {args.message} : {error.strerror}",
                f"cannot read the message {args.message}: {error.strerror}",
            )
    log_dir: Path | None = None
    if args.log is not None:
        log_dir = Path(args.log)
        if not log_dir.is_dir():
            return _fail(
                f"{args.log} n'est pas un répertoire de journal exporté.",
                f"{args.log} is not an exported log directory.",
            )
    verdict = verify_receipt(receipt, original=original, anchors=anchors, log_dir=log_dir)
    out = _utf8(sys.stdout)
    if args.json:
        json.dump(verdict.to_json(), out, ensure_ascii=False, indent=2)
        out.write("\n")
    else:
        out.write(render_verdict(verdict))
    out.flush()
    return int(verdict.exit_status)


def _utf8(stream: TextIO) -> TextIO:
    # ✓ and accents on a terminal that is not UTF-8 (LANG=C): replaced rather
    # than a UnicodeEncodeError after the verdict is known.
    if isinstance(stream, io.TextIOWrapper) and stream.encoding.lower().replace("-", "") != "utf8":
        stream.reconfigure(errors="replace")
    return stream


def render_verdict(verdict: Verdict) -> str:
    """The verdict for a person: the conclusion, one line per step, what the receipt says."""
    fr, en = status_text(verdict.exit_status)
    if verdict.ok:
        head = f"Accusé de réception VALIDE — {fr}.\nReceipt VALID — {en}."
    else:
        status = int(verdict.exit_status)
        head = (
            f"Accusé de réception NON VALIDE (statut {status}) — {fr}.\n"
            f"Receipt NOT VALID (status {status}) — {en}."
        )
    lines = [head, ""]
    for step in verdict.steps:
        lines.append(f"{_MARKS[step.outcome]} [{step.code.value}] {step.fr}")
        lines.append(f"    {step.en}")
    if verdict.evidence is not None:
        lines += ["", "Ce que dit l'accusé / What the receipt says:"]
        if not verdict.ok:
            lines.append(
                "  (non garanti : la vérification a échoué / not vouched for: the check failed)"
            )
        for label_fr, label_en, value in evidence_summary(verdict.evidence):
            label = label_fr if label_fr == label_en else f"{label_fr} / {label_en}"
            lines.append(f"  {label} : {value}")
    if verdict.signer_subject is not None:
        lines.append(f"  Signataire / Signer : {verdict.signer_subject}")
        lines.append(f"  SHA-256 du certificat / certificate SHA-256 : {verdict.signer_sha256}")
    if verdict.signing_time is not None:
        lines.append(f"  Signé le / Signed at : {verdict.signing_time.isoformat()}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m palais.verify_cli``: the command on its own."""
    parser = argparse.ArgumentParser(
        prog="palais verify-receipt", description=_DESCRIPTION, epilog=_EPILOG
    )
    _configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
