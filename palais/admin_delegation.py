"""`palais admin delegation grant|revoke|list`: lawyers' delegations, by an operator.

A lawyer usually grants and revokes their own delegations over HTTPS with
their card (``/api/delegations``); an operator does it here for them (a
lawyer without a working card, a departure at the bar):

    palais admin delegation grant --from LAWYER --to DELEGATE [--dossier N]... [--rights read|write]
    palais admin delegation revoke --from LAWYER --to DELEGATE [--dossier N]...
    palais admin delegation list [--from LAWYER] [--to DELEGATE]

The rules are the domain's (``palais.mailbox.delegation``): a refusal names
what is wrong (an unknown account or dossier, a delegation to oneself, a
delegate who is not staff a lawyer may delegate to...) and exits 1. Each
change commits with its audit event; a running gateway applies it within
seconds (its delegation cache expires), a revoked delegate's boxes leave
their IMAP list and their sending for the lawyer is refused.
"""

from __future__ import annotations

import argparse

from palais.admin_cli import AdminContext, command
from palais.mailbox.delegation import Delegation, DelegationRefused, Right

__all__ = ["add_commands", "cmd_grant", "cmd_list", "cmd_revoke"]


def _describe(d: Delegation) -> str:
    what = "all dossiers" if d.dossier is None else f"dossier {d.dossier}"
    since = f"{d.granted_at:%Y-%m-%d %H:%M} UTC"
    return (
        f"{d.delegate} for {d.lawyer}: {d.right.value} on {what} (since {since}, by {d.granted_by})"
    )


def cmd_grant(ctx: AdminContext, args: argparse.Namespace) -> None:
    from palais.storage import delegation as store

    dossiers = [n.strip() for n in args.dossier or []]
    with ctx.transaction() as conn:
        try:
            plan = store.grant(
                conn, args.lawyer, args.delegate, Right(args.rights), dossiers, actor=ctx.actor
            )
        except DelegationRefused as refused:
            ctx.fail(f"cannot grant: {refused.text}")
        granted = store.in_force(conn, lawyer=plan.lawyer.address, delegate=plan.delegate.address)
    scope = (
        "all dossiers"
        if plan.dossiers == (None,)
        else "dossier " + ", ".join(str(n) for n in plan.dossiers)
    )
    for d in granted:
        ctx.emit(d.as_json(), _describe(d))
    if not ctx.json:
        print(
            f"granted: {plan.delegate.address} may {plan.right.value} {scope} of"
            f" {plan.lawyer.address} (in force within seconds)",
            file=ctx.out,
        )


def cmd_revoke(ctx: AdminContext, args: argparse.Namespace) -> None:
    from palais.storage import delegation as store

    dossiers = [n.strip() for n in args.dossier or []]
    with ctx.transaction() as conn:
        try:
            plan = store.revoke(conn, args.lawyer, args.delegate, dossiers, actor=ctx.actor)
        except DelegationRefused as refused:
            ctx.fail(f"cannot revoke: {refused.text}")
        left = store.in_force(conn, lawyer=plan.lawyer, delegate=plan.delegate)
    for d in plan.revoked:
        ctx.emit({**d.as_json(), "revoked": True}, "revoked: " + _describe(d))
    if any(d.dossier is None for d in left) and not ctx.json:
        # Revoking one dossier leaves a grant of all dossiers covering it.
        print(
            f"note: {plan.delegate} still holds all dossiers of {plan.lawyer}"
            " (revoke without --dossier to end it)",
            file=ctx.out,
        )


def cmd_list(ctx: AdminContext, args: argparse.Namespace) -> None:
    from palais.storage import delegation as store
    from palais.storage.directory import Directory

    with ctx.reader.connect() as conn:
        for given in (args.lawyer, args.delegate):
            if given is not None and Directory.account_by_address(conn, given) is None:
                ctx.fail(f"no account {given.strip()!r}")
        found = store.in_force(conn, lawyer=args.lawyer, delegate=args.delegate)
    for d in found:
        ctx.emit(d.as_json(), _describe(d))
    if not found and not ctx.json:
        print("no delegation in force", file=ctx.out)


def add_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Mount ``delegation grant|revoke|list`` on what ``add_admin`` returns."""
    group = groups.add_parser(
        "delegation", help="grant, revoke and list lawyers' delegations (e-délégation)"
    )
    actions = group.add_subparsers(dest="delegation_command", required=True, metavar="ACTION")

    def parties(p: argparse.ArgumentParser, *, required: bool) -> None:
        p.add_argument(
            "--from", dest="lawyer", required=required, metavar="ADDRESS", help="the lawyer"
        )
        p.add_argument(
            "--to",
            dest="delegate",
            required=required,
            metavar="ADDRESS",
            help="the delegate (a collaborateur or another avocat)",
        )

    p = actions.add_parser(
        "grant", help="let a delegate read (or read and write) a lawyer's dossiers"
    )
    parties(p, required=True)
    p.add_argument(
        "--dossier",
        action="append",
        metavar="NUMBER",
        help="one dossier (repeatable); all the lawyer's dossiers without it",
    )
    p.add_argument(
        "--rights",
        choices=[r.value for r in Right],
        default=Right.READ.value,
        help="read (the default), or write: also flag, delete, draft and send for the lawyer",
    )
    command(p, cmd_grant)

    p = actions.add_parser("revoke", help="end a delegation, or its part for some dossiers")
    parties(p, required=True)
    p.add_argument(
        "--dossier", action="append", metavar="NUMBER", help="only this dossier (repeatable)"
    )
    command(p, cmd_revoke)

    p = actions.add_parser("list", help="the delegations in force")
    parties(p, required=False)
    command(p, cmd_list)
