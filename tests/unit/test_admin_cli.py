"""`palais admin` as other modules extend it: add_admin, command(), AdminContext, statuses."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from palais.admin_cli import (
    FAILED,
    OK,
    USAGE,
    AdminContext,
    AdminError,
    add_admin,
    command,
    iso_datetime,
)
from palais.gateway.audit import certificate_address, command_refused
from palais.instance import init_instance
from palais.mailbox.audit import AuditAction
from palais.mailbox.errors import NoSuchMailbox, NotAllowed, TemporaryFailure
from palais.storage.audit import query, record


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("admin-unit") / "instance"
    init_instance(root, base_port=30000)
    return root


def build() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="palais")
    sub = parser.add_subparsers(dest="command", required=True)
    return parser, add_admin(sub)


def test_another_module_adds_its_group_and_gets_a_context(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser, groups = build()
    seen: list[AdminContext] = []

    def hello(ctx: AdminContext, args: argparse.Namespace) -> int | None:
        seen.append(ctx)
        with ctx.transaction() as conn:
            record(conn, actor=ctx.actor, action=AuditAction.TRUST_ADDED, subject=args.name)
        ctx.emit({"name": args.name}, f"added {args.name}")
        return None

    trust = groups.add_parser("example").add_subparsers(dest="example_command", required=True)
    p = trust.add_parser("add")
    p.add_argument("name")
    command(p, hello)

    # -d and --json before the command or after it.
    for argv in (
        ["admin", "-d", str(home), "--json", "example", "add", "CA 1"],
        ["admin", "example", "add", "CA 2", "-d", str(home), "--json"],
    ):
        args = parser.parse_args(argv)
        assert args.func(args) == OK
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out == [{"name": "CA 1"}, {"name": "CA 2"}]
    assert all(ctx.json for ctx in seen)
    assert seen[0].actor.startswith("operator:") and seen[0].settings.root == home.resolve()
    events = list(query(seen[0].reader, action="trust-added"))
    assert [(e.subject, e.actor) for e in events] == [
        ("CA 1", seen[0].actor),
        ("CA 2", seen[0].actor),
    ]


def test_a_handler_fails_with_a_message_and_a_status(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser, groups = build()

    def refuse(ctx: AdminContext, args: argparse.Namespace) -> int | None:
        ctx.fail("unreadable PEM: ca.pem", USAGE)

    def half(ctx: AdminContext, args: argparse.Namespace) -> int | None:
        raise AdminError("no such CA")

    command(groups.add_parser("refuse"), refuse)
    command(groups.add_parser("half"), half)
    args = parser.parse_args(["admin", "refuse", "-d", str(home)])
    assert args.func(args) == USAGE
    assert capsys.readouterr().err == "palais admin: unreadable PEM: ca.pem\n"
    args = parser.parse_args(["admin", "half", "-d", str(home)])
    assert args.func(args) == FAILED
    assert capsys.readouterr().err == "palais admin: no such CA\n"


def test_palais_home_is_the_default(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from palais.admin_cli import main

    monkeypatch.setenv("PALAIS_HOME", str(home))
    assert main(["account", "list", "--role", "magistrat"]) == OK
    assert "paul.lefevre@justice.palais.test" in capsys.readouterr().out
    monkeypatch.setenv("PALAIS_HOME", str(home / "missing"))
    assert main(["account", "list"]) == USAGE
    assert "no such instance directory" in capsys.readouterr().err


def test_iso_datetime() -> None:
    assert iso_datetime("2026-11-30").isoformat() == "2026-11-30T00:00:00+00:00"
    assert iso_datetime("2026-11-30T15:00+01:00").isoformat() == "2026-11-30T14:00:00+00:00"
    with pytest.raises(argparse.ArgumentTypeError, match="ISO 8601"):
        iso_datetime("30/11/2026")


def test_certificate_address(home: Path) -> None:
    demo = json.loads((home / "demo.json").read_text(encoding="utf-8"))
    pem = (home / demo["identities"]["avocat1"]["cert"]).read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    assert certificate_address(der) == demo["identities"]["avocat1"]["address"]
    assert certificate_address(b"not a certificate") is None
    assert certificate_address(None) is None


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[AuditAction, str, dict[str, object]]] = []

    def refused(
        self,
        action: AuditAction,
        *,
        listener: str,
        peer: str | None,
        reason: str,
        subject: str | None = None,
        detail: object = None,
    ) -> None:
        assert isinstance(detail, dict)
        self.calls.append((action, reason, detail))


def test_only_refusals_that_say_no_are_audited() -> None:
    audit = Recorder()
    for error in (
        NoSuchMailbox(),
        TemporaryFailure(reason="writer stopped"),
        RuntimeError("a bug is no refusal"),
    ):
        command_refused(
            audit, listener="imaps", peer=None, identity="a@x", command="SELECT", error=error
        )
    assert audit.calls == []
    command_refused(
        audit,
        listener="submission",
        peer=("127.0.0.1", 1),
        identity="a@x",
        command="RCPT",
        error=NotAllowed(reason="not a party to 2025-1"),
    )
    assert audit.calls == [
        (
            AuditAction.COMMAND_REFUSED,
            "not a party to 2025-1",
            {"command": "RCPT", "kind": "not-allowed"},
        )
    ]
