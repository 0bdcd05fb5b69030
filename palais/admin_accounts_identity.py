"""`palais admin cert link` and `palais admin account merge`: operators settle identities.

Accounts are keyed by the holder's identifier (bar number, agent number);
a renewed card carrying it is linked by the gateway itself (case A). What
the gateway cannot decide goes to an operator:

- case B, ``cert link ADDRESS CERT.pem --reason TEXT``: a card whose holder
  cannot prove continuity (another number, none, an address change) is
  linked to an account. The certificate must be one the gateway trusts now
  (the stored trust: anchors and CRLs in force) and linked to no account.
- case C, ``account merge FROM INTO --reason TEXT``: a duplicate account is
  folded into the other (same role): its certificates, dossier
  participations, service membership and mail move to INTO, whose boxes then
  show both histories; FROM is deactivated, its address kept taken.

Each change and its audit event commit in one transaction. A running
gateway sees them within seconds: its identity cache expires
(``Directory.TTL``) and its session watcher cuts the sessions of a
certificate now linked to another account.

Mounted on ``palais admin`` by :func:`add_commands`; on its own:
``python -m palais.admin_accounts_identity cert link ... -d DIR``.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from palais.admin_cli import USAGE, AdminContext, command
from palais.mailbox.enrolment import (
    IdentityChangeRefused,
    decide_link,
    decide_merge,
)
from palais.mailbox.identity import CertificateIdentity

__all__ = ["add_commands", "cmd_account_merge", "cmd_cert_link"]


def _reason(ctx: AdminContext, args: argparse.Namespace) -> str:
    reason = str(args.reason).strip()
    if not reason:
        ctx.fail("--reason must say why", USAGE)
    return reason


def _certificate_der(ctx: AdminContext, args: argparse.Namespace) -> bytes:
    data = args.certificate.read_bytes()  # OSError: reported with the file name, status 2
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)
    except ValueError:
        ctx.fail(f"{args.certificate}: not a certificate (PEM or DER)", USAGE)


def _identify(ctx: AdminContext, args: argparse.Namespace, der: bytes) -> CertificateIdentity:
    """The certificate as the gateway would see it now, or a refusal naming why."""
    from palais.pki.identify import CertificateRefused
    from palais.storage import trust as store
    from palais.trust_live import anchors_of, seed_from_settings

    # An instance never started yet has its [trust] files only: judge by
    # what its first start would trust, as `palais admin trust` does.
    seed_from_settings(ctx.engine, ctx.settings)
    trust = store.current(ctx.reader)
    anchors = anchors_of(trust, timedelta(seconds=ctx.settings.trust.crl_grace))
    try:
        return anchors.identify(der)
    except CertificateRefused as refused:
        ctx.fail(f"{args.certificate}: not trusted by the gateway: {refused.reason}")


def cmd_cert_link(ctx: AdminContext, args: argparse.Namespace) -> None:
    from palais.storage.directory import Directory

    reason = _reason(ctx, args)
    cert = _identify(ctx, args, _certificate_der(ctx, args))
    with ctx.transaction() as conn:
        account = Directory.account_by_address(conn, args.address)
        if account is None:
            ctx.fail(f"no account {args.address.strip()!r}")
        holder = Directory.certificate_holder(conn, cert.fingerprint)
        keyed = (
            None
            if cert.serial_number is None
            else Directory.identifier_holder(conn, cert.role, cert.serial_number)
        )
        try:
            plan = decide_link(account, cert, holder=holder, identifier_holder=keyed)
        except IdentityChangeRefused as refused:
            ctx.fail(f"cannot link {args.certificate}: {refused}")
        Directory.link_certificate(conn, plan, cert, actor=ctx.actor, reason=reason)
    text = f"{cert.fingerprint} linked to {account.address}"
    if cert.address != account.address:
        text += f" (the card names {cert.address}; the account keeps {account.address})"
    ctx.emit(
        {
            "address": account.address,
            "fingerprint": cert.fingerprint,
            "certificate_address": cert.address,
            "identifier": plan.identifier,
            "reason": reason,
            "by": ctx.actor,
        },
        text + ": it connects within seconds",
    )


def cmd_account_merge(ctx: AdminContext, args: argparse.Namespace) -> None:
    from palais.storage.directory import Directory

    reason = _reason(ctx, args)
    with ctx.transaction() as conn:
        source = Directory.account_by_address(conn, args.source)
        if source is None:
            ctx.fail(f"no account {args.source.strip()!r}")
        target = Directory.account_by_address(conn, args.target)
        if target is None:
            ctx.fail(f"no account {args.target.strip()!r}")
        try:
            plan = decide_merge(source, target)
        except IdentityChangeRefused as refused:
            ctx.fail(f"cannot merge: {refused}")
        done = Directory.merge_accounts(conn, plan, actor=ctx.actor, reason=reason)
    ctx.emit(
        {**done, "reason": reason, "by": ctx.actor},
        f"{source.address} merged into {target.address}: {done['certificates']} certificate(s),"
        f" {done['placements_moved']} message placement(s) moved to {plan.mailbox_owner}"
        f" ({done['placements_already_held']} already there); {source.address} deactivated",
    )


def _subcommands(
    parser: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    # argparse keeps a parser's subcommands only among its actions.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise LookupError(f"{parser.prog} has no subcommands")


def add_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Mount ``cert link`` and ``account merge`` on what ``add_admin`` returns."""
    cert = groups.add_parser("cert", help="link certificates to accounts")
    actions = cert.add_subparsers(dest="cert_command", required=True, metavar="ACTION")
    p = actions.add_parser(
        "link",
        help="link a trusted card to an account (a renewal the gateway could not match)",
    )
    p.add_argument("address", metavar="ADDRESS", help="the account")
    p.add_argument("certificate", metavar="CERT.pem", type=Path, help="the card, PEM or DER")
    p.add_argument("--reason", required=True, help="why, for the audit log")
    command(p, cmd_cert_link)

    account = groups.choices.get("account")
    if account is None:  # pragma: no cover - add_admin always makes it
        raise LookupError("palais admin has no account group")
    p = _subcommands(account).add_parser(
        "merge",
        help="fold a duplicate account into another: certificates, dossiers, mail",
    )
    p.add_argument("source", metavar="FROM_ADDRESS", help="the duplicate, deactivated after")
    p.add_argument("target", metavar="INTO_ADDRESS", help="the account that remains")
    p.add_argument("--reason", required=True, help="why, for the audit log")
    command(p, cmd_account_merge)
