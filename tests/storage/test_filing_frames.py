"""The gateway's side of its filing process: frames, writes, connection, worker.

The frames between the gateway and its filing process: what goes in comes out.

Filings cross as pickles whose dataclasses, enumerations and UTC times go
by a dispatch table of their own (``palais.storage.filing_process``); any
other object, and any dataclass whose constructor does not take every
field in order, goes by pickle's default. Each is checked for identity of
type and value after the round trip, as the filing process reads it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from palais.config import Settings, load_settings
from palais.evidence_setup import filing_evidence
from palais.mailbox.errors import TemporaryFailure
from palais.mailbox.message import summarize
from palais.mailbox.model import BoxKind
from palais.pki.devpki import DevPki
from palais.storage.filing_process import FilingProcess, _frame, _Frames, _Link
from palais.storage.filings import Filing
from tests.storage import test_filing_runs
from tests.storage.test_filing_runs import SINCE, _open, _submissions
from tests.storage.test_mailstore import ME

# That module's development PKI (once a module).
pki = test_filing_runs.pki


def _through(message: Any) -> Any:
    (out,) = _Frames().feed(_frame(message))
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down, times in the same zone."""
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, datetime):
        return bool(a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset())
    return bool(a == b)


def _filing(n: int) -> Filing:
    data, plan = _submissions(n + 1)[n]
    return Filing(
        ME,
        data,
        summarize(data),
        plan,
        resend_since=SINCE,
        dossier_id=7,
        now=datetime.now(UTC),
        writers={},
        arrival="ab" * 32,
    )


def test_a_filing_comes_out_as_it_went_in() -> None:
    filing = _filing(0)
    out = _through((41, filing))
    assert out[0] == 41
    assert _same(out[1], filing)
    # The enumerations are the members themselves, not copies.
    kinds = [d.kind for d in out[1].plan.destinations]
    assert kinds == [BoxKind.ENVOYES, BoxKind.RECUS]
    assert kinds[0] is BoxKind.ENVOYES
    # Classes go by name, enumerations' (whose class is not ``type``) too.
    assert _through((BoxKind, Filing, datetime)) == (BoxKind, Filing, datetime)


def test_times_keep_their_zone_to_the_microsecond() -> None:
    paris = timezone(timedelta(hours=1), "CET")
    moments = [
        datetime(2026, 12, 2, 5, 6, 7, 123456, tzinfo=UTC),
        datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC),  # before the epoch
        datetime(2026, 12, 2, 6, 6, 7, 999999, tzinfo=paris),
        datetime(2026, 12, 2, 5, 6, 7),  # naive
    ]
    out = _through(moments)
    assert _same(out, moments)
    assert out[0].tzinfo is UTC


@dataclass(frozen=True)
class _Later:
    """A dataclass whose constructor does not take every field: pickle's default."""

    name: str
    size: int = field(init=False, default=0)
    tags: tuple[str, ...] = field(kw_only=True, default=())


def test_other_objects_go_by_pickles_default() -> None:
    later = _Later("x", tags=("a", "b"))
    object.__setattr__(later, "size", 12)  # set after construction: must survive
    error = TemporaryFailure("The gateway is restarting, please try again shortly", reason="r")
    out = _through((later, error, {"k": b"\x00\xff"}, {3, 4}))
    assert _same(out[0], later) and out[0].size == 12
    assert isinstance(out[1], TemporaryFailure) and str(out[1]) == str(error)
    assert out[2] == {"k": b"\x00\xff"} and out[3] == {3, 4}


def test_frames_cut_anywhere_come_out_whole_and_in_order() -> None:
    filings = [_filing(n) for n in range(3)]
    stream = b"".join(_frame((n, f)) for n, f in enumerate(filings))
    frames = _Frames()
    out: list[Any] = []
    for start in range(0, len(stream), 997):  # a cut inside headers and bodies
        out.extend(frames.feed(stream[start : start + 997]))
    assert [n for n, _ in out] == [0, 1, 2]
    assert all(_same(o, f) for (_, o), f in zip(out, filings, strict=True))


class _Recorder:
    """The link's transport, as the filing process's socket would be written."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


def test_the_filings_of_one_turn_of_the_loop_go_in_one_write(tmp_path: Path) -> None:
    filings = [_filing(n) for n in range(3)]

    async def run() -> None:
        process = FilingProcess(
            "sqlite:///unused",
            tmp_path,
            open_evidence=_never,
            publish=lambda _events: None,
            on_erased=lambda _sha: None,
        )
        recorder = _Recorder()
        link = _Link(process)
        link.transport = recorder  # type: ignore[assignment]
        process._loop, process._link = asyncio.get_running_loop(), link
        waiting = [asyncio.ensure_future(process.file(f)) for f in filings]
        for _ in range(3):
            await asyncio.sleep(0)  # the three reach their wait, then the send
        assert len(recorder.writes) == 1
        sent = _Frames().feed(recorder.writes[0])
        assert [ticket for ticket, _ in sent] == [1, 2, 3]
        assert all(
            _same(s, replace(f, writers={})) for (_, s), f in zip(sent, filings, strict=True)
        )
        # A second turn's filing goes in a write of its own.
        later = asyncio.ensure_future(process.file(filings[0]))
        for _ in range(3):
            await asyncio.sleep(0)
        assert len(recorder.writes) == 2
        process._received(([], [], [(t, False, None) for t in (1, 2, 3, 4)]))
        for outcome in await asyncio.gather(*waiting, later, return_exceptions=True):
            assert isinstance(outcome, TemporaryFailure)

    asyncio.run(run())


def _never() -> Any:
    raise AssertionError("no evidence service: the process is not started")


def test_a_writer_beside_the_gateways_is_not_kept_waiting(tmp_path: Path, pki: DevPki) -> None:
    """The gateway's writer holds its SQLite connection between batches; a
    command or the indexer writing the same file opens another at once."""
    st = _open(f"sqlite:///{tmp_path / 'palais.sqlite'}", tmp_path / "blobs", pki)
    try:
        data, plan = _submissions(1)[0]
        asyncio.run(st.mail.file(ME, data, summarize(data), plan, resend_since=SINCE))
        started = time.monotonic()
        with st.writer_engine.begin() as conn:
            assert conn.execute(text("SELECT count(*) FROM message")).scalar_one() >= 1
        assert time.monotonic() - started < 5  # the pool's wait is 30 s
        # And the writer goes on after it.
        data, plan = _submissions(2)[1]
        asyncio.run(st.mail.file(ME, data, summarize(data), plan, resend_since=SINCE))
    finally:
        st.close()


def test_the_filing_process_has_a_receipt_worker_from_three_cores(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: DevPki
) -> None:
    settings = _settings(tmp_path, pki)
    for cores, worker in ((1, False), (2, False), (3, True), (8, True)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        service = filing_evidence(settings)
        try:
            assert (service.worker is not None) is worker, cores
        finally:
            service.close()


def _settings(tmp_path: Path, pki: DevPki) -> Settings:
    path = tmp_path / "palais.toml"
    path.write_text(
        f'[evidence]\ncertificate = "{pki.evidence_cert_path}"\nkey = "{pki.evidence_key_path}"\n'
    )
    return load_settings(path)
