"""``palais admin trust add|list|remove`` and ``palais admin crl import|fetch``.

What the gateway trusts lives in the database (``palais.trust_live``);
these commands change it, and every running node applies the change to
new connections within ``[trust] watch_interval`` seconds, no restart.
They mount under ``palais admin`` (``palais.admin_cli``) with
:func:`add_commands`; ``python -m palais.admin_trust trust list -d DIR``
runs them on their own.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from palais.admin_cli import FAILED, OK, AdminContext, command
from palais.mailbox.identity import ROLES_BY_COMMUNITY, TrustCommunity
from palais.pki.identify import TITLE_ROLES
from palais.pki.trust_update import CrlRejected, CrlUnchanged, TrustRejected, describe_ca
from palais.storage import trust as store
from palais.trust_live import (
    add_trust,
    fetch_crls,
    import_crl,
    remove_trust,
    seed_from_settings,
)

__all__ = [
    "add_commands",
    "cmd_crl_fetch",
    "cmd_crl_import",
    "cmd_trust_add",
    "cmd_trust_list",
    "cmd_trust_remove",
]


def _profiles(community: str) -> dict[str, Any]:
    """The certificate profile clients of a community must match, for `list`."""
    group = TrustCommunity(community)
    roles = sorted(ROLES_BY_COMMUNITY[group])
    titles = sorted(t for t, role in TITLE_ROLES.items() if role in ROLES_BY_COMMUNITY[group])
    return {
        "roles": [str(r) for r in roles],
        "titles": titles,
        # Court systems and operators: one kind of holder, the title is optional.
        "title_required": group not in (TrustCommunity.COURT_SYSTEMS, TrustCommunity.ADMIN),
        "requires": ["rfc822Name in subjectAltName", "clientAuth (if extendedKeyUsage)"],
    }


def _seeded(ctx: AdminContext) -> None:
    # An instance never started yet still has its [trust] files only: the
    # first command sees (and changes) what the first start would seed.
    seed_from_settings(ctx.engine, ctx.settings)


def cmd_trust_add(ctx: AdminContext, args: argparse.Namespace) -> None:
    _seeded(ctx)
    file: Path = args.file
    data = file.read_bytes()  # OSError: reported by command() as unreadable input
    try:
        anchor = add_trust(ctx.engine, args.community, data, actor=ctx.actor, reason=args.reason)
    except (TrustRejected, store.AlreadyTrusted) as exc:
        ctx.fail(str(exc))
    info = describe_ca(anchor.pem.encode("ascii"))
    note = "" if info.crl_urls else " (no http:// CRL distribution point: import its CRL)"
    ctx.emit(
        {
            "community": anchor.community,
            "kind": anchor.kind,
            "fingerprint": anchor.fingerprint,
            "subject": anchor.subject,
            "crl_urls": list(info.crl_urls),
        },
        f"trusted for {anchor.community} ({anchor.kind}): {anchor.subject}\n"
        f"  fingerprint {anchor.fingerprint}{note}",
    )


def cmd_trust_remove(ctx: AdminContext, args: argparse.Namespace) -> None:
    _seeded(ctx)
    try:
        gone = remove_trust(ctx.engine, args.fingerprint, actor=ctx.actor, reason=args.reason)
    except store.NotTrusted as exc:
        ctx.fail(str(exc))
    ctx.emit(
        {"community": gone.community, "fingerprint": gone.fingerprint, "subject": gone.subject},
        f"no longer trusted for {gone.community}: {gone.subject}",
    )


def cmd_trust_list(ctx: AdminContext, args: argparse.Namespace) -> None:
    _seeded(ctx)
    trust = store.current(ctx.reader)
    crls = {c.issuer: c for c in trust.crls}
    if not ctx.json:
        print(f"trust generation {trust.generation}", file=ctx.out)
    for row in store.anchors(ctx.reader, removed=args.all):
        crl = crls.get(row.fingerprint)
        profile = _profiles(row.community)
        state = f"removed {row.removed:%Y-%m-%d %H:%M}" if row.removed else "in force"
        if crl is None:
            crl_text = "no CRL: its clients are refused"
        else:
            next_update = crl.next_update.isoformat() if crl.next_update else "?"
            crl_text = f"CRL #{crl.number} next update {next_update} ({crl.source})"
        ctx.emit(
            {
                "community": row.community,
                "kind": row.kind,
                "fingerprint": row.fingerprint,
                "subject": row.subject,
                "added": row.added,
                "removed": row.removed,
                "crl": None
                if crl is None
                else {
                    "number": crl.number,
                    "this_update": crl.this_update,
                    "next_update": crl.next_update,
                    "source": crl.source,
                },
                "profile": profile,
                "generation": trust.generation,
            },
            f"{row.community:<13} {row.kind:<12} {state}  {row.subject}\n"
            f"  fingerprint {row.fingerprint}\n  {crl_text}\n"
            f"  roles {', '.join(profile['roles'])}; titles {', '.join(profile['titles'])}",
        )


def cmd_crl_import(ctx: AdminContext, args: argparse.Namespace) -> None:
    _seeded(ctx)
    file: Path = args.file
    data = file.read_bytes()
    try:
        new = import_crl(
            ctx.engine, data, source=f"import:{file.name}", actor=ctx.actor, reason=args.reason
        )
    except CrlUnchanged as exc:
        ctx.emit({"result": "unchanged", "detail": str(exc)}, f"unchanged: {exc}")
        return
    except CrlRejected as exc:
        ctx.fail(f"CRL refused: {exc}")
    ctx.emit(
        {
            "result": "imported",
            "issuer": new.issuer,
            "number": new.number,
            "next_update": new.next_update,
        },
        f"CRL #{new.number} in force for CA {new.issuer} until {new.next_update.isoformat()}",
    )


def cmd_crl_fetch(ctx: AdminContext, args: argparse.Namespace) -> int:
    """One fetch round now (a running gateway also runs one every crl_fetch_interval)."""
    _seeded(ctx)
    outcomes = fetch_crls(ctx.engine, timeout=ctx.settings.trust.crl_fetch_timeout)
    for o in outcomes:
        ctx.emit(
            {"ca": o.ca, "url": o.url, "result": o.result, "detail": o.detail},
            f"{o.result:<11} {o.url} {o.detail}".rstrip(),
        )
    return OK if all(o.result in ("fetched", "unchanged") for o in outcomes) else FAILED


def add_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Mount ``trust`` and ``crl`` on what ``palais.admin_cli.add_admin`` returns."""
    trust = groups.add_parser("trust", help="trusted CAs per community (anchors, intermediates)")
    actions = trust.add_subparsers(dest="trust_command", required=True, metavar="ACTION")
    p = actions.add_parser("add", help="trust a CA for a community; applied live on every node")
    p.add_argument("community", choices=[c.value for c in TrustCommunity])
    p.add_argument("file", type=Path, help="the CA certificate, PEM or DER")
    p.add_argument("--reason", default=None, help="why, for the audit log")
    command(p, cmd_trust_add)
    p = actions.add_parser("list", help="the CAs in force, their CRLs and client profiles")
    p.add_argument("--all", action="store_true", help="removed CAs too")
    command(p, cmd_trust_list)
    p = actions.add_parser("remove", help="stop trusting a CA: its clients are refused")
    p.add_argument("fingerprint", help="SHA-256 of the CA certificate, as `trust list` shows")
    p.add_argument("--reason", default=None, help="why, for the audit log")
    command(p, cmd_trust_remove)

    crl = groups.add_parser("crl", help="certificate revocation lists")
    actions = crl.add_subparsers(dest="crl_command", required=True, metavar="ACTION")
    p = actions.add_parser("import", help="put a CRL in force (signed by a CA in use, newer)")
    p.add_argument("file", type=Path, help="the CRL, PEM or DER")
    p.add_argument("--reason", default=None, help="why, for the audit log")
    command(p, cmd_crl_import)
    p = actions.add_parser("fetch", help="fetch each CA's CRL from its distribution points now")
    command(p, cmd_crl_fetch)
