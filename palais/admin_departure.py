"""`palais admin departure set|cancel|list`: a clerk's or a magistrate's departure.

- ``departure set ADDRESS --date YYYY-MM-DD [--successor ADDRESS]``: the last
  working day, and who takes the dossiers. A second ``set`` changes the
  pending departure (date, successor, or none with ``--no-successor``).
- ``departure cancel ADDRESS [--reason TEXT]``: until it takes effect.
- ``departure list [--all]``: pending ones (``--all``: cancelled and done too).

The departure takes effect at 00:00 the day after ``--date`` in ``[departures]
timezone`` (Europe/Paris by default); the running gateway carries it out
then (``palais.storage.departure.DepartureRunner``). The rules are
``palais.mailbox.departure``'s; each change commits with its audit event.
"""

from __future__ import annotations

import argparse
import zoneinfo
from datetime import UTC, date, datetime

from palais.admin_cli import USAGE, AdminContext, command
from palais.mailbox.departure import DepartureRefused, DepartureState, check_cancel, check_departure

__all__ = ["add_commands", "cmd_departure_cancel", "cmd_departure_list", "cmd_departure_set"]


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date: {text!r} (YYYY-MM-DD, the last working day)"
        ) from None


def _zone(ctx: AdminContext) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(ctx.settings.departures.timezone)  # checked when loaded


def cmd_departure_set(ctx: AdminContext, args: argparse.Namespace) -> None:
    from palais.storage.departure import declare, pending_of
    from palais.storage.directory import Directory

    if args.successor is not None and args.no_successor:
        ctx.fail("--successor and --no-successor exclude each other", USAGE)
    zone = _zone(ctx)
    now = datetime.now(UTC)
    with ctx.transaction() as conn:
        departing = Directory.account_by_address(conn, args.address)
        if departing is None:
            ctx.fail(f"no account {args.address.strip()!r}")
        before = pending_of(conn, departing.account_id)
        if before is not None:
            try:
                check_cancel(before.state, before.effective_at, now)
            except DepartureRefused as refused:
                ctx.fail(f"cannot change the departure of {departing.address}: {refused.text}")
        successor = None
        if args.successor is not None:
            successor = Directory.account_by_address(conn, args.successor)
            if successor is None:
                ctx.fail(f"no account {args.successor.strip()!r} (the successor)")
        elif before is not None and before.successor is not None and not args.no_successor:
            # A new date keeps the successor already named.
            successor = Directory.account_by_address(conn, before.successor)
        leaves = None
        if successor is not None and successor.account_id != departing.account_id:
            theirs = pending_of(conn, successor.account_id)
            leaves = None if theirs is None else theirs.last_day
        try:
            when = check_departure(
                departing,
                successor,
                last_day=args.date,
                now=now,
                zone=zone,
                successor_leaves=leaves,
            )
        except DepartureRefused as refused:
            ctx.fail(f"cannot record the departure of {departing.address}: {refused.text}")
        departure_id, replaced = declare(
            conn,
            departing,
            successor,
            last_day=args.date,
            effective_at=when,
            actor=ctx.actor,
            now=now,
        )
    who = successor.address if successor is not None else None
    text = (
        f"departure of {departing.address} {'changed' if replaced else 'recorded'}:"
        f" last day {args.date.isoformat()}, takes effect {when.isoformat()}"
        + (
            f"; {who} takes the dossiers"
            if who
            else "; no successor: the dossiers stay with the service, their lawyers are told"
        )
    )
    ctx.emit(
        {
            "id": departure_id,
            "address": departing.address,
            "last_day": args.date.isoformat(),
            "effective_at": when.isoformat(),
            "successor": who,
            "changed": replaced is not None,
            "by": ctx.actor,
        },
        text,
    )


def cmd_departure_cancel(ctx: AdminContext, args: argparse.Namespace) -> None:
    from palais.storage.departure import cancel, pending_of
    from palais.storage.directory import Directory

    now = datetime.now(UTC)
    reason = args.reason.strip() if args.reason else None
    with ctx.transaction() as conn:
        departing = Directory.account_by_address(conn, args.address)
        if departing is None:
            ctx.fail(f"no account {args.address.strip()!r}")
        row = pending_of(conn, departing.account_id)
        if row is None:
            ctx.fail(f"{departing.address} has no pending departure")
        try:
            check_cancel(row.state, row.effective_at, now)
        except DepartureRefused as refused:
            ctx.fail(f"cannot cancel the departure of {departing.address}: {refused.text}")
        cancel(conn, row, actor=ctx.actor, reason=reason or None)
    ctx.emit(
        {
            "id": row.id,
            "address": departing.address,
            "state": DepartureState.CANCELLED.value,
            "reason": reason or None,
            "by": ctx.actor,
        },
        f"departure of {departing.address} on {row.last_day.isoformat()} cancelled",
    )


def cmd_departure_list(ctx: AdminContext, args: argparse.Namespace) -> None:
    from palais.storage.departure import listing

    zone = _zone(ctx)
    for row in listing(ctx.reader, every=args.all):
        local = row.effective_at.astimezone(zone)
        ctx.emit(
            row.as_json(),
            f"{row.address}  {row.role}  last day {row.last_day.isoformat()}"
            f"  effective {local.isoformat(timespec='minutes')}"
            f"  successor {row.successor or '-'}  {row.state.value}",
        )


def add_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Mount ``departure set|cancel|list`` on what ``add_admin`` returns."""
    departure = groups.add_parser(
        "departure", help="a clerk's or a magistrate's departure: set, cancel, list"
    )
    actions = departure.add_subparsers(dest="departure_command", required=True, metavar="ACTION")

    p = actions.add_parser(
        "set",
        help="declare (or change) a departure: last working day and successor",
        description="At 00:00 the day after --date ([departures] timezone) the successor"
        " gains the dossiers and service membership and the account is deactivated; with"
        " no successor the dossiers stay with the service and their lawyers are told.",
    )
    p.add_argument("address", metavar="ADDRESS", help="the clerk or magistrate leaving")
    p.add_argument(
        "--date", type=_day, required=True, metavar="YYYY-MM-DD", help="the last working day"
    )
    p.add_argument("--successor", metavar="ADDRESS", help="who takes the dossiers")
    p.add_argument(
        "--no-successor",
        action="store_true",
        help="when changing a departure: drop the successor named before",
    )
    command(p, cmd_departure_set)

    p = actions.add_parser("cancel", help="cancel a pending departure, until it takes effect")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--reason", default=None, help="why, for the audit log")
    command(p, cmd_departure_cancel)

    p = actions.add_parser("list", help="pending departures (--all: cancelled and done too)")
    p.add_argument("--all", action="store_true", help="every departure, with what it did")
    command(p, cmd_departure_list)
