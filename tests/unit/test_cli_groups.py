"""`palais` imports only the command group it runs: a receipt's verifier or
a lawyer's client does not wait for the database layer to load."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("sqlalchemy", "alembic", "palais.storage", "palais.gateway", "twisted")


def modules_after(*argv: str) -> tuple[int, str, set[str]]:
    """Run ``palais ARGV`` in a fresh interpreter: its status, its output and
    the modules it had imported when the command returned."""
    probe = (
        "import json, sys, contextlib, io\n"
        "from palais.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):\n"
        "    try:\n"
        f"        status = main({list(argv)!r})\n"
        "    except SystemExit as e:\n"
        "        status = e.code\n"
        "print(json.dumps([status, out.getvalue(), sorted(sys.modules)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    status, output, modules = json.loads(done.stdout)
    return int(status or 0), str(output), set(modules)


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))


@pytest.mark.parametrize("group", ["verify-receipt", "client"])
def test_a_light_group_runs_without_the_database_layer(group: str) -> None:
    status, output, modules = modules_after(group, "--help")
    assert status == 0, output
    assert f"usage: palais {group}" in output
    assert heavy(modules) == []


def test_help_and_a_wrong_name_list_every_command() -> None:
    every = ("init", "serve", "migrate", "evidence", "verify-receipt", "admin", "client")
    for argv in (["--help"], ["-h", "client"]):
        status, output, _ = modules_after(*argv)
        assert status == 0
        assert all(name in output for name in every), output
    status, output, _ = modules_after("bogus")
    assert status == 2
    assert "invalid choice: 'bogus'" in output
    assert all(f"'{name}'" in output for name in every), output
