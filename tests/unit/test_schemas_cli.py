"""`palais schemas DIR` writes every structured document's JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from palais.mailbox.documents import document_schemas


def test_palais_schemas_writes_each_schema(tmp_path: Path) -> None:
    target = tmp_path / "schemas"
    done = subprocess.run(
        [sys.executable, "-m", "palais", "schemas", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    written = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in target.iterdir()}
    assert written == document_schemas()
    assert json.loads((target / "saisine.schema.json").read_text())["x-media-type"] == (
        "application/vnd.palais.saisine+json"
    )


def test_palais_schemas_names_a_directory_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = subprocess.run(
        [sys.executable, "-m", "palais", "schemas", str(blocker / "sub")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("palais schemas: ") and "file/sub" in done.stderr
