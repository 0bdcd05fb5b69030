"""`palais admin`: the operator's commands on an instance's directory and audit log.

Every command takes ``-d DIR`` (the instance directory or its palais.toml;
default ``$PALAIS_HOME``, else the current directory) and ``--json`` (one
JSON object per line, for scripts). Errors go to stderr as ``palais admin:
<message>`` and the exit status says what kind they are:

- 0: done;
- 1: refused or failed (unknown account, already in that state, the
  database at another schema revision or unreachable);
- 2: usage, or input that cannot be read (no instance directory, no
  palais.toml, a bad date, an unreadable file).

Other modules add their own groups (``palais admin trust ...``) to the
subparsers ``add_admin`` returns, and attach their handlers with
``command(parser, fn)``: ``fn(ctx, args)`` gets an open ``AdminContext``,
returns None (0) or a status, and may raise ``AdminError`` (or call
``ctx.fail``). Each change writes its audit event (``palais.storage.audit
.record``) in the transaction of the change (``ctx.transaction()``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NoReturn, TextIO

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from palais.cli import os_error_text
from palais.config import ConfigError, Settings, load_settings
from palais.mailbox.audit import AuditAction, AuditRecord
from palais.mailbox.identity import Role
from palais.storage import schema

__all__ = [
    "FAILED",
    "OK",
    "USAGE",
    "AdminContext",
    "AdminError",
    "Handler",
    "add_admin",
    "command",
    "iso_datetime",
    "main",
]

AC = schema.table(schema.Account)
SV = schema.table(schema.Service)
CE = schema.table(schema.Certificate)
DO = schema.table(schema.Dossier)
PA = schema.table(schema.Participation)

OK: Final = 0
FAILED: Final = 1  # refused or failed: unknown account, schema mismatch...
USAGE: Final = 2  # bad usage or unreadable input (argparse's own status too)


class AdminError(Exception):
    """A failure to report as ``palais admin: <message>`` with an exit status."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class AdminContext:
    """What a command works with: the instance's settings, its database, how to answer."""

    settings: Settings
    engine: Engine  # the writer engine: changes go through ctx.transaction()
    json: bool = False
    actor: str = field(default_factory=lambda: operator_actor())
    out: TextIO = field(default_factory=lambda: sys.stdout)
    _reader: Engine | None = None

    @classmethod
    def open(cls, root: Path, *, json_output: bool = False) -> AdminContext:
        """The instance at ``root`` (a directory or a palais.toml), its schema checked."""
        from palais.instance import sqlite_path
        from palais.storage.engine import make_engine
        from palais.storage.migrate import SchemaMismatch, check_revision

        if not root.exists():
            raise AdminError(f"{root}: no such instance directory", USAGE)
        try:
            settings = load_settings(root / "palais.toml" if root.is_dir() else root)
        except ConfigError as e:
            raise AdminError(str(e), USAGE) from None
        url = settings.database_url()
        database = sqlite_path(url)
        # SQLite would create an empty file and the schema check would then
        # talk of revisions; the operator has the wrong directory.
        if database is not None and not database.exists():
            raise AdminError(f"{database}: no database (is {root} an instance?)", USAGE)
        engine = make_engine(url, writer=True)
        try:
            check_revision(engine)
        except SchemaMismatch as e:
            engine.dispose()
            raise AdminError(str(e)) from None
        except SQLAlchemyError as e:
            engine.dispose()
            raise AdminError(f"cannot open the database: {_first_line(e)}") from None
        return cls(settings=settings, engine=engine, json=json_output)

    @property
    def reader(self) -> Engine:
        """An engine for reads: on SQLite the writer's BEGIN IMMEDIATE would hold
        the write lock for a long listing, stalling a running gateway."""
        if self._reader is None:
            from palais.storage.engine import make_engine

            self._reader = make_engine(self.settings.database_url(), writer=False)
        return self._reader

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One writer transaction: a change and its audit event commit together."""
        with self.engine.begin() as conn:
            yield conn

    def emit(self, record: Mapping[str, object], text: str) -> None:
        """One result: ``record`` as a JSON line with --json, else ``text``."""
        if self.json:
            print(json.dumps(record, ensure_ascii=False, default=_jsonable), file=self.out)
        else:
            print(text, file=self.out)

    def fail(self, message: str, status: int = FAILED) -> NoReturn:
        raise AdminError(message, status)

    def close(self) -> None:
        self.engine.dispose()
        if self._reader is not None:
            self._reader.dispose()


Handler = Callable[[AdminContext, argparse.Namespace], int | None]


def operator_actor() -> str:
    """Who is acting, for the audit log: the operator's OS login."""
    try:
        login = getpass.getuser()
    except (OSError, KeyError):  # no LOGNAME/USER and no passwd entry (a bare container)
        login = f"uid{os.getuid()}"
    return f"operator:{login}"


def instance_dir(given: Path | None) -> Path:
    """-d DIR, else $PALAIS_HOME, else the current directory."""
    if given is not None:
        return given
    home = os.environ.get("PALAIS_HOME")
    return Path(home) if home else Path.cwd()


def iso_datetime(text: str) -> datetime:
    """An ISO 8601 date or date-time for argparse; naive means UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date or date-time: {text!r} (e.g. 2026-11-30 or 2026-11-30T14:00Z)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _instance_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Accepted before the command and after it; on the leaf the defaults are
    # suppressed, or they would overwrite what was given before the command.
    parser.add_argument(
        "-d",
        "--dir",
        type=Path,
        metavar="DIR",
        default=None if top else argparse.SUPPRESS,
        help="instance directory (or its palais.toml); default $PALAIS_HOME, else the"
        " current directory",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print results as JSON lines",
    )


def command(parser: argparse.ArgumentParser, fn: Handler) -> argparse.ArgumentParser:
    """Make ``parser`` run ``fn`` with an open ``AdminContext`` (adds -d and --json)."""
    _instance_options(parser, top=False)

    def run(args: argparse.Namespace) -> int:
        ctx: AdminContext | None = None
        try:
            ctx = AdminContext.open(instance_dir(args.dir), json_output=args.json)
            status = fn(ctx, args)
        except AdminError as e:
            return _failed(e.message, e.status)
        except SQLAlchemyError as e:
            # The database refused or went away: the operator reads why.
            return _failed(f"database error: {_first_line(e)}", FAILED)
        except BrokenPipeError:
            # The reader went away (``| head``): no traceback, no message, and
            # none at exit either when Python flushes stdout.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return OK
        except OSError as e:
            return _failed(os_error_text(e), USAGE)
        finally:
            if ctx is not None:
                ctx.close()
        return OK if status is None else status

    parser.set_defaults(func=run)
    return parser


def _failed(message: str, status: int) -> int:
    print(f"palais admin: {message}", file=sys.stderr)
    return status


def _first_line(error: BaseException) -> str:
    # SQLAlchemy appends the statement and a link to its error page.
    text = str(getattr(error, "orig", None) or error)
    return text.splitlines()[0] if text else type(error).__name__


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- the parser ---------------------------------------------------------------------


def add_admin(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add ``admin`` to the ``palais`` parser; returns its subparsers for other groups."""
    admin = sub.add_parser(
        "admin",
        help="operator's commands: trust, CRLs, accounts, departures, audit log",
        description="Operator's commands on an instance. Exit status: 0 done, 1 refused or"
        " failed, 2 usage or unreadable input.",
    )
    _instance_options(admin, top=True)
    groups = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    _add_account(groups)
    _add_audit(groups)
    from palais.admin_accounts_identity import add_commands as add_identity_commands

    add_identity_commands(groups)  # cert link, account merge (imports this module)
    from palais.admin_trust import add_commands as add_trust_commands

    add_trust_commands(groups)  # trust add|list|remove, crl import|fetch
    from palais.admin_departure import add_commands as add_departure_commands

    add_departure_commands(groups)  # departure set|cancel|list
    from palais.admin_delegation import add_commands as add_delegation_commands

    add_delegation_commands(groups)  # delegation grant|revoke|list
    from palais.admin_blobs import add_commands as add_blob_commands

    add_blob_commands(groups)  # sweep-blobs (PostgreSQL's large objects)
    return groups


def _add_account(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    account = groups.add_parser("account", help="list, show, deactivate, reactivate accounts")
    commands = account.add_subparsers(dest="account_command", required=True, metavar="ACTION")

    p = commands.add_parser("list", help="the accounts, active ones unless --inactive")
    p.add_argument("--role", choices=[r.value for r in Role], help="only accounts of this role")
    p.add_argument("--inactive", action="store_true", help="only deactivated accounts")
    command(p, cmd_account_list)

    p = commands.add_parser(
        "show", help="one account: role, service, state, certificates, dossiers"
    )
    p.add_argument("address", metavar="ADDRESS")
    command(p, cmd_account_show)

    p = commands.add_parser(
        "deactivate",
        help="refuse the account's connections (within seconds on a running gateway)",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--reason", required=True, help="why, for the audit log")
    command(p, cmd_account_deactivate)

    p = commands.add_parser("reactivate", help="let a deactivated account connect again")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--reason", default=None, help="why, for the audit log")
    command(p, cmd_account_reactivate)


def _add_audit(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = groups.add_parser(
        "audit",
        help="print the audit log, oldest first (--json: the JSON-lines export)",
        description="Operators' changes and the gateway's refusals, oldest first.",
    )
    p.add_argument(
        "--since", type=iso_datetime, metavar="ISO-DATE", help="events at or after this time"
    )
    p.add_argument("--account", metavar="ADDRESS", help="events about or by this address")
    p.add_argument(
        "--action",
        choices=[a.value for a in AuditAction],
        metavar="ACTION",
        help="one kind of event: " + ", ".join(a.value for a in AuditAction),
    )
    p.add_argument("--limit", type=_positive, metavar="N", help="at most N events")
    command(p, cmd_audit)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


# -- account ------------------------------------------------------------------------


def _when(value: datetime | str | None) -> str | None:
    from palais.storage.sql import utc

    return None if value is None else utc(value).isoformat()


def cmd_account_list(ctx: AdminContext, args: argparse.Namespace) -> None:
    certificates = (
        select(func.count()).select_from(CE).where(CE.c.account_id == AC.c.id).scalar_subquery()
    )
    stmt = (
        select(
            AC.c.address,
            AC.c.role,
            AC.c.display_name,
            AC.c.active,
            AC.c.created_at,
            SV.c.address.label("service"),
            certificates.label("certificates"),
        )
        .outerjoin(SV, SV.c.id == AC.c.service_id)
        .where(AC.c.active.is_(not args.inactive))
        .order_by(AC.c.address)
    )
    if args.role:
        stmt = stmt.where(AC.c.role == args.role)
    with ctx.reader.connect() as conn:
        for row in conn.execute(stmt):
            ctx.emit(
                {
                    "address": row.address,
                    "role": row.role,
                    "display_name": row.display_name,
                    "service": row.service,
                    "active": bool(row.active),
                    "created": _when(row.created_at),
                    "certificates": int(row.certificates),
                },
                f"{row.address}  {row.role}  {'active' if row.active else 'inactive'}"
                f"  {row.service or '-'}  {row.display_name}",
            )


def _account(conn: Connection, ctx: AdminContext, address: str) -> Any:
    row = conn.execute(
        select(AC, SV.c.address.label("service"))
        .outerjoin(SV, SV.c.id == AC.c.service_id)
        .where(AC.c.address == address.strip().lower())
    ).first()
    if row is None:
        ctx.fail(f"no account {address.strip()!r}")
    return row


def cmd_account_show(ctx: AdminContext, args: argparse.Namespace) -> None:
    with ctx.reader.connect() as conn:
        account = _account(conn, ctx, args.address)
        certs = conn.execute(
            select(CE.c.fingerprint, CE.c.subject, CE.c.first_seen)
            .where(CE.c.account_id == account.id)
            .order_by(CE.c.first_seen)
        ).all()
        # Dossiers it takes part in; a clerk's are also its service's.
        own = select(DO.c.number, DO.c.juridiction, PA.c.capacity).join(
            PA, PA.c.dossier_id == DO.c.id
        )
        dossiers = {
            r.number: (r.juridiction, r.capacity)
            for r in conn.execute(own.where(PA.c.account_id == account.id))
        }
        if account.service_id is not None:
            for r in conn.execute(
                select(DO.c.number, DO.c.juridiction).where(DO.c.service_id == account.service_id)
            ):
                dossiers.setdefault(r.number, (r.juridiction, "service"))
    record: dict[str, object] = {
        "address": account.address,
        "role": account.role,
        "display_name": account.display_name,
        "service": account.service,
        "active": bool(account.active),
        "created": _when(account.created_at),
        "certificates": [
            {"fingerprint": c.fingerprint, "subject": c.subject, "first_seen": _when(c.first_seen)}
            for c in certs
        ],
        "dossiers": [
            {"number": number, "juridiction": where, "capacity": capacity}
            for number, (where, capacity) in sorted(dossiers.items())
        ],
    }
    lines = [
        f"account:   {account.address}",
        f"name:      {account.display_name}",
        f"role:      {account.role}",
        f"service:   {account.service or '-'}",
        f"active:    {'yes' if account.active else 'no'}",
        f"created:   {record['created']}",
        f"certificates ({len(certs)}):",
        *(f"  {c.fingerprint}  {c.subject}  first seen {_when(c.first_seen)}" for c in certs),
        f"dossiers ({len(dossiers)}):",
        *(
            f"  {number}  {where}  {capacity}"
            for number, (where, capacity) in sorted(dossiers.items())
        ),
    ]
    ctx.emit(record, "\n".join(lines))


def _set_active(
    ctx: AdminContext, address: str, *, active: bool, reason: str | None
) -> dict[str, object]:
    from palais.storage.audit import record

    with ctx.transaction() as conn:
        account = _account(conn, ctx, address)
        if bool(account.active) == active:
            ctx.fail(f"{account.address} is already {'active' if active else 'inactive'}")
        conn.execute(update(AC).where(AC.c.id == account.id).values(active=active))
        record(
            conn,
            actor=ctx.actor,
            action=AuditAction.ACCOUNT_REACTIVATED if active else AuditAction.ACCOUNT_DEACTIVATED,
            subject=account.address,
            reason=reason,
            detail={"role": account.role},
        )
    return {"address": account.address, "active": active, "reason": reason, "by": ctx.actor}


def cmd_account_deactivate(ctx: AdminContext, args: argparse.Namespace) -> None:
    reason = args.reason.strip()
    if not reason:
        ctx.fail("--reason must say why", USAGE)
    done = _set_active(ctx, args.address, active=False, reason=reason)
    ctx.emit(
        done,
        f"{done['address']} deactivated: its new connections are refused within seconds",
    )


def cmd_account_reactivate(ctx: AdminContext, args: argparse.Namespace) -> None:
    reason = args.reason.strip() if args.reason else None
    done = _set_active(ctx, args.address, active=True, reason=reason or None)
    ctx.emit(done, f"{done['address']} reactivated")


# -- audit --------------------------------------------------------------------------


def audit_line(event: AuditRecord) -> str:
    """One event as one line of text."""
    parts = [event.at.isoformat(timespec="seconds"), event.action.value, f"by {event.actor}"]
    if event.subject:
        parts.append(f"subject={event.subject}")
    if event.listener:
        parts.append(f"listener={event.listener}")
    if event.peer:
        parts.append(f"peer={event.peer}")
    if event.reason:
        parts.append(f"reason={event.reason!r}")
    if event.detail:
        parts.append(json.dumps(dict(event.detail), ensure_ascii=False, sort_keys=True))
    return "  ".join(parts)


def cmd_audit(ctx: AdminContext, args: argparse.Namespace) -> None:
    from palais.storage.audit import query

    for event in query(
        ctx.reader, since=args.since, account=args.account, action=args.action, limit=args.limit
    ):
        ctx.emit(event.as_json(), audit_line(event))


# -- standalone ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``palais admin`` on its own: ``python -m palais.admin_cli account list -d DIR``."""
    parser = argparse.ArgumentParser(prog="palais")
    sub = parser.add_subparsers(dest="command", required=True)
    add_admin(sub)
    args = parser.parse_args(["admin", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
