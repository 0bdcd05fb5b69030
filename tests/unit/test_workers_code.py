"""A worker of `palais serve --workers N` runs the supervisor's Palais, from
whatever directory the operator started it in."""

from __future__ import annotations

from pathlib import Path

import pytest

from palais.workers import _Worker


def test_a_worker_runs_the_supervisors_palais_whatever_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # A checkout of another version in the working directory: `python -m
    # palais` alone would run it.
    decoy = tmp_path / "palais"
    decoy.mkdir()
    for name in ("__init__.py", "__main__.py"):
        (decoy / name).write_text("raise SystemExit('a decoy palais ran')\n")
    monkeypatch.chdir(tmp_path)
    worker = _Worker(tmp_path / "no-such-instance", "node1-w1")
    worker.start()
    process = worker.process
    assert process is not None and process.stdout is not None
    try:
        assert process.wait(timeout=60) == 2
    finally:
        process.stdout.close()
    err = capfd.readouterr().err
    assert "decoy" not in err
    assert "no-such-instance: no such configuration file" in err
