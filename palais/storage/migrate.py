"""The database schema's revision: applied by ``palais migrate``, checked at every start.

A gateway never migrates silently when it starts: with several nodes on one
database, one operator step upgrades the schema once, and a node whose code
expects another revision refuses to run rather than write rows of the wrong
shape.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

__all__ = [
    "SchemaMismatch",
    "check_revision",
    "current_revision",
    "head_revision",
    "upgrade",
]

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaMismatch(Exception):
    """The database is not at the revision this code was written for."""

    def __init__(self, current: str | None, expected: str, *, known: bool) -> None:
        self.current = current
        self.expected = expected
        self.behind = known
        if current is None:
            text = "the database has no Palais schema yet; run `palais migrate DIR`"
        elif known:
            text = (
                f"the database schema is at revision {current}, this version of Palais "
                f"needs {expected}; run `palais migrate DIR` (once for all nodes)"
            )
        else:
            text = (
                f"the database schema is at revision {current}, which this version of "
                f"Palais does not know (it needs {expected}): the database was migrated "
                "by a newer Palais"
            )
        super().__init__(text)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise RuntimeError("no migrations shipped with this package")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        rev: str | None = MigrationContext.configure(conn).get_current_revision()
        return rev


def check_revision(engine: Engine) -> None:
    """Raise SchemaMismatch unless the database is exactly at the code's revision."""
    current = current_revision(engine)
    expected = head_revision()
    if current == expected:
        return
    script = ScriptDirectory.from_config(alembic_config())
    known = current is not None and _is_known(script, current)
    raise SchemaMismatch(current, expected, known=known or current is None)


def _is_known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic raises its own errors for an unknown id
        return False


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the code's revision; returns (before, after)."""
    before = current_revision(engine)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return before, head_revision()
