"""`palais migrate` applies the schema; `palais serve` never migrates silently."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.e2e.instance import create_instance


def palais(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palais", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def serve_refuses(root: Path) -> str:
    """Run `palais serve` and return its message; it must exit by itself, non-zero."""
    done = palais("serve", str(root))
    assert done.returncode != 0, done.stdout + done.stderr
    assert "palais: ready" not in done.stdout
    return done.stderr


def test_serve_on_an_empty_database_names_palais_migrate(tmp_path: Path) -> None:
    inst = create_instance(tmp_path / "instance")
    for name in ("palais.db", "palais.db-wal", "palais.db-shm"):
        (inst.root / name).unlink(missing_ok=True)

    message = serve_refuses(inst.root)
    assert "palais migrate" in message
    assert "Traceback" not in message

    done = palais("migrate", str(inst.root))
    assert done.returncode == 0, done.stderr
    assert "upgraded from empty to" in done.stdout
    again = palais("migrate", str(inst.root))
    assert again.returncode == 0 and "already at revision" in again.stdout

    inst.start()
    try:
        assert inst.proc is not None and inst.proc.poll() is None
    finally:
        assert inst.stop() == 0


def test_serve_on_a_database_behind_the_code_names_palais_migrate(tmp_path: Path) -> None:
    inst = create_instance(tmp_path / "instance")
    with sqlite3.connect(inst.root / "palais.db") as db:
        # What a database made by an older Palais looks like: no revision row.
        db.execute("DELETE FROM alembic_version")
    message = serve_refuses(inst.root)
    assert "palais migrate" in message


def test_serve_on_a_database_from_a_newer_palais_refuses(tmp_path: Path) -> None:
    inst = create_instance(tmp_path / "instance")
    with sqlite3.connect(inst.root / "palais.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'f00dcafe'")
    message = serve_refuses(inst.root)
    assert "f00dcafe" in message and "newer Palais" in message


def test_migrate_with_a_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    done = palais("migrate", str(tmp_path / "nowhere"))
    assert done.returncode == 2
    assert "no such configuration file" in done.stderr
