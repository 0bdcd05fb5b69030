from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.instance import Instance, create_instance

# Small enough that a test can exceed it quickly over loopback.
TEST_MAX_SIZE = 1024 * 1024


@pytest.fixture(scope="session")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """One running gateway shared by the end-to-end tests of a session."""
    root: Path = tmp_path_factory.mktemp("palais") / "instance"
    inst = create_instance(root, extra_config=f"[smtp]\nmax_message_size = {TEST_MAX_SIZE}\n")
    inst.start()
    try:
        yield inst
    finally:
        if inst.proc is not None:
            inst.stop()
