"""`palais admin sweep-blobs`: one sweep of the large objects no blob row names, now.

The gateway sweeps on its own every ``[storage] blob_sweep_interval``
(``palais.storage.blob_sweep``); this is the same pass for an operator who
wants to see the count, or to run it while no gateway runs. PostgreSQL only:
on SQLite the bytes are in pack files, which have no large objects.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from palais.admin_cli import AdminContext, command
from palais.storage.blob_sweep import SweepOutcome, sweep
from palais.storage.engine import is_sqlite

__all__ = ["add_commands", "cmd_sweep_blobs"]


def add_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Mount ``sweep-blobs`` on what ``add_admin`` returns."""
    p = groups.add_parser(
        "sweep-blobs",
        help="unlink large objects no blob row names (PostgreSQL; rolled-back batches)",
        description="Remembers the large objects no blob row names and unlinks those"
        " remembered at least the grace period ago ([storage] blob_sweep_grace) and still"
        " unnamed: an object is unnamed for a moment in every filing, so the first sight"
        " never unlinks. Run it again after the grace to unlink what it remembered."
        " Exit status 1: on SQLite, or another node sweeping at this moment.",
    )
    p.add_argument(
        "--grace",
        type=_seconds,
        metavar="SECONDS",
        help="instead of [storage] blob_sweep_grace; 0 is safe only while no node files messages",
    )
    command(p, cmd_sweep_blobs)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def cmd_sweep_blobs(ctx: AdminContext, args: argparse.Namespace) -> None:
    if is_sqlite(ctx.settings.database_url()):
        ctx.fail("sweep-blobs: the database is SQLite; message bytes are in pack files")
    seconds = ctx.settings.storage.blob_sweep_grace if args.grace is None else args.grace
    grace = timedelta(seconds=seconds)
    total = sweep(ctx.engine, grace=grace)
    if not total.ran:
        ctx.fail("sweep-blobs: another node is sweeping now; try again in a moment")
    while total.more:  # a long backlog: pass after pass, each its own transaction
        outcome = sweep(ctx.engine, grace=grace)
        if not outcome.ran:
            break
        total = SweepOutcome(
            ran=True,
            found=total.found,  # as the first pass saw them, before its unlinks
            remembered=total.remembered + outcome.remembered,
            unlinked=total.unlinked + outcome.unlinked,
            waiting=outcome.waiting,
            more=outcome.more,
        )
    ctx.emit(
        {**total.as_dict(), "grace_seconds": seconds},
        f"large objects named by no blob row: {total.found} found, {total.remembered}"
        f" newly remembered, {total.unlinked} unlinked, {total.waiting} waiting for"
        f" their grace of {seconds:g} s",
    )
