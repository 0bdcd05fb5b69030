"""The atheris entry points (fuzz/atheris_palais.py) run, without atheris, on their seeds.

They are not run in CI for long; this keeps them from rotting as the code moves.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.fuzz.budget import TEST_TIMEOUT

pytestmark = pytest.mark.timeout(TEST_TIMEOUT)

SCRIPT = Path(__file__).resolve().parents[2] / "fuzz" / "atheris_palais.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("atheris_palais", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ENTRY = load()
EDGES = [
    b"",
    b"\x00",
    b"\r\n",
    b"a@",
    b"&",
    b"*:0",
    # Found by the mime target in its first 10 seconds (OverflowError from the date parser).
    b"Date: Mon, 1 Jan 2024 10:00:00 +010044444444444\r\n\r\nx",
]


@pytest.mark.parametrize("name", sorted(ENTRY.TARGETS))
def test_target_holds_on_seeds_and_edges(name: str) -> None:
    seeds = ENTRY.seeds(name)
    assert seeds, f"{name}: no seed inputs"
    for data in [*seeds, *EDGES]:
        ENTRY.TARGETS[name](data)  # raises if a property fails


def test_empty_corpus_is_seeded(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    ENTRY.seed_empty_corpora("imap", ["prog", "-max_total_time=1", str(corpus)])
    assert sorted(p.read_bytes() for p in corpus.iterdir()) == sorted(ENTRY.seeds("imap"))
