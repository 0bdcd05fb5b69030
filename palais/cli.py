"""The `palais` command: init, serve, migrate, evidence, verify-receipt, admin."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from palais.logformat import (
    NODE_TEXT_FORMAT,
    TEXT_FORMAT,
    JsonLinesFormatter,
    log_uncaught_exceptions,
    name_node,
)

if TYPE_CHECKING:
    from palais.config import Settings

_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _setup_logging(level: str, fmt: str = "text", node: str | None = None) -> None:
    """Log to stderr, as text lines or (``fmt == "json"``) as JSON lines;
    with ``node``, every line names it."""
    handler = logging.StreamHandler(sys.stderr)
    if node:
        name_node(node)
    if fmt == "json":
        handler.setFormatter(JsonLinesFormatter())
        # Warnings and uncaught tracebacks would otherwise reach stderr as
        # bare text, breaking a stream that a shipper reads line by line.
        logging.captureWarnings(True)
        log_uncaught_exceptions(logging.getLogger("palais"))
    else:
        handler.setFormatter(logging.Formatter(NODE_TEXT_FORMAT if node else TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    # aiosmtpd logs every command line at INFO; our own lines say what matters.
    logging.getLogger("mail.log").setLevel(logging.ERROR)


def os_error_text(error: OSError) -> str:
    """An OSError as a command says it: the file it is about, when it has
    one (a missing or unreadable path), then the reason."""
    where = f"{error.filename}: " if error.filename is not None else ""
    return f"{where}{error.strerror or error}"


def _cannot_start(fmt: str, reason: str) -> int:
    if fmt == "json":
        logging.getLogger("palais").error("palais serve: cannot start: %s", reason)
    else:
        print(f"palais serve: cannot start: {reason}", file=sys.stderr)
    return 1


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def cmd_init(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from palais.instance import InstanceExists, init_instance

    try:
        demo = init_instance(Path(args.dir), base_port=args.ports, database=args.database)
    except InstanceExists as e:
        print(f"palais init: {e}", file=sys.stderr)
        return 1
    except SQLAlchemyError as e:  # the database named cannot be reached or used
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"palais init: database: {reason}", file=sys.stderr)
        return 1
    print(f"palais init: instance created in {Path(args.dir).resolve()}")
    print(f"  ports: {demo['ports']}")
    print(f"  demo identities and dossier: {Path(args.dir) / 'demo.json'}")
    return 0


def cmd_node_add(args: argparse.Namespace) -> int:
    from palais.instance import InstanceExists, add_node

    try:
        demo = add_node(Path(args.dir), Path(args.newdir), base_port=args.ports, node=args.node)
    except InstanceExists as e:
        print(f"palais node add: {e}", file=sys.stderr)
        return 1
    print(f"palais node add: node {demo['node']} created in {Path(args.newdir).resolve()}")
    print(f"  ports: {demo['ports']}")
    print(f"  run it with: palais serve {args.newdir}")
    return 0


def _instance_settings(command: str, where: str) -> Settings | None:
    """The settings of an instance directory (or a palais.toml); None once the error is said."""
    from palais.config import ConfigError, load_settings

    root = Path(where)
    try:
        return load_settings(root / "palais.toml" if root.is_dir() else root)
    except ConfigError as e:
        print(f"palais {command}: {e}", file=sys.stderr)
        return None


def _node_of(settings: Settings, given: str | None) -> str | None:
    """This process's node id: given (a worker), configured, or on PostgreSQL
    the host's name (nodes may join it at any time); None on SQLite."""
    from palais.storage.engine import is_sqlite

    if given:
        return given
    if settings.instance.node:
        return settings.instance.node
    if is_sqlite(settings.database_url()):
        return None
    import socket

    return socket.gethostname()


def cmd_serve(args: argparse.Namespace) -> int:
    from palais.app import serve

    settings = _instance_settings("serve", args.dir)
    if settings is None:
        return 2
    if args.workers != 1:
        return _serve_workers(args, settings)
    node = _node_of(settings, args.node)
    _setup_logging(settings.log.level, settings.log.format, node)
    from palais.pki.hsm import HsmConfigError
    from palais.pki.signing import EvidenceKeyError
    from palais.pki.trust_update import CrlRejected, TrustRejected
    from palais.storage import SchemaMismatch

    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.instance.event_loop)) as runner:
            runner.run(serve(settings, node=node, reuse_port=args.reuse_port))
    except SchemaMismatch as e:
        return _cannot_start(settings.log.format, str(e))
    except (EvidenceKeyError, HsmConfigError) as e:
        return _cannot_start(settings.log.format, f"evidence key: {e}")
    except (TrustRejected, CrlRejected) as e:
        return _cannot_start(settings.log.format, f"trust: {e}")
    except OSError as e:
        # A certificate or key that is missing or unreadable: named, since
        # "No such file or directory" alone names none.
        return _cannot_start(settings.log.format, os_error_text(e))
    return 0


def _serve_workers(args: argparse.Namespace, settings: Settings) -> int:
    from palais.storage.engine import is_sqlite
    from palais.workers import run_workers

    if args.workers < 1:
        print("palais serve: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.node:
        print("palais serve: --workers and --node do not go together", file=sys.stderr)
        return 2
    if is_sqlite(settings.database_url()):
        print(
            "palais serve: --workers needs PostgreSQL: [database] url is SQLite, whose"
            " file one process writes; set it to a postgresql+psycopg:// URL"
            " (see README, Several nodes)",
            file=sys.stderr,
        )
        return 2
    base = _node_of(settings, None)
    assert base is not None
    return run_workers(Path(args.dir), base, args.workers)


def cmd_migrate(args: argparse.Namespace) -> int:
    from palais.storage import migrate_database

    settings = _instance_settings("migrate", args.dir)
    if settings is None:
        return 2
    try:
        before, after = migrate_database(settings.database_url())
    except Exception as e:  # the operator's terminal: the cause is theirs to read
        print(f"palais migrate: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if before == after:
        print(f"palais migrate: the schema is already at revision {after}")
    else:
        print(f"palais migrate: schema upgraded from {before or 'empty'} to {after}")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    """Write the JSON Schema of every structured document into a directory."""
    import json

    from palais.mailbox.documents import document_schemas

    target = Path(args.dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name, schema in document_schemas().items():
            text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            (target / name).write_text(text, encoding="utf-8")
            print(target / name)
    except OSError as e:
        print(f"palais schemas: {target}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


def _add_evidence(sub: _Commands) -> None:
    from palais.evidence_cli import add_commands

    add_commands(sub)


def _add_verify(sub: _Commands) -> None:
    from palais.verify_cli import add_command

    add_command(sub)


def _add_admin(sub: _Commands) -> None:
    from palais.admin_cli import add_admin

    add_admin(sub)


def _add_client(sub: _Commands) -> None:
    from palais.client_cli import add_client

    add_client(sub)


# The command groups defined by other modules, by the name that starts them.
_GROUPS: dict[str, Callable[[_Commands], None]] = {
    "evidence": _add_evidence,
    "verify-receipt": _add_verify,
    "admin": _add_admin,
    "client": _add_client,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="palais", description="Palais secure message gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="create an instance with a development PKI and demo data")
    p.add_argument("dir")
    p.add_argument(
        "--ports",
        type=int,
        default=10000,
        metavar="BASE",
        help="listeners on BASE+465, +587, +993, +25, +443 (default 10000)",
    )
    p.add_argument(
        "--database",
        metavar="URL",
        help="keep the state in this PostgreSQL database (postgresql+psycopg://...);"
        " other nodes join it with `palais node add`",
    )
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("node", help="nodes of an instance sharing one PostgreSQL")
    node_sub = p.add_subparsers(dest="node_command", required=True)
    p = node_sub.add_parser("add", help="make another node of an instance's cluster")
    p.add_argument("dir", help="an instance directory of the cluster")
    p.add_argument("newdir", help="the new node's directory")
    p.add_argument(
        "--ports", type=int, required=True, metavar="BASE", help="its listeners, as for init"
    )
    p.add_argument("--node", help="its node id (default: the new directory's name)")
    p.set_defaults(func=cmd_node_add)
    p = sub.add_parser("serve", help="run every listener of an instance")
    p.add_argument("dir", help="instance directory (or its palais.toml)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N processes sharing the ports, each a node (PostgreSQL only)",
    )
    # Set by --workers for each worker it starts.
    p.add_argument("--node", help=argparse.SUPPRESS)
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("migrate", help="bring the database schema to this version's revision")
    p.add_argument("dir", help="instance directory (or its palais.toml)")
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("schemas", help="write the structured documents' JSON Schemas into DIR")
    p.add_argument("dir")
    p.set_defaults(func=cmd_schemas)
    # Each group's module imports what its commands need (the database,
    # cryptography, pydantic): only the one named is imported, so that
    # `palais verify-receipt` or `palais client` starts in a fraction of the
    # time the whole took. Help, or a name no command has, needs them all.
    words = sys.argv[1:] if argv is None else argv
    at = next((i for i, w in enumerate(words) if not w.startswith("-")), len(words))
    named = words[at] if at < len(words) else None
    every = (
        named is None
        or (named not in sub.choices and named not in _GROUPS)
        or any(w in ("-h", "--help") for w in words[:at])  # palais -h client
    )
    for group, add in _GROUPS.items():
        if every or named == group:
            add(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
