"""The stores every storage test runs on: SQLite, and PostgreSQL (a server the tests start)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from palais.storage import Storage, open_storage
from tests.storage.test_mailstore import setup_directory

DATABASES = ["sqlite", "postgresql"]


def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL for ``request.param`` ("sqlite" or "postgresql")."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@contextmanager
def running_storage(url: str, blobs: Path) -> Iterator[Storage]:
    """A started store holding the test directory (tests.storage.test_mailstore)."""
    st = open_storage(url, blobs)
    st.commits.run_now(setup_directory)
    st.start()
    try:
        yield st
    finally:
        st.close()


@pytest.fixture(params=DATABASES)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    # Every store test runs on both databases the gateway supports
    # (PostgreSQL: skipped where its binaries are not installed).
    with running_storage(database_url(request, tmp_path), tmp_path / "blobs") as st:
        yield st
