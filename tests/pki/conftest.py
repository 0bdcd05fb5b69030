"""Fixtures for the PKI tests.

Certificates are generated per run under pytest's tmp directories; nothing
here is ever written to the repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from palais.pki import DevPki, IssuedIdentity, create_dev_pki, issue_sample_identities


@pytest.fixture(scope="session")
def shared_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """A PKI for tests that only read it: generating one per test adds up."""
    return create_dev_pki(tmp_path_factory.mktemp("shared") / "pki")


@pytest.fixture(scope="session")
def samples(shared_pki: DevPki) -> dict[str, IssuedIdentity]:
    """One identity per role in shared_pki, plus "stranger" from the untrusted CA."""
    return issue_sample_identities(shared_pki)


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    """A PKI of one's own, for tests that issue or revoke."""
    return create_dev_pki(tmp_path / "pki")
