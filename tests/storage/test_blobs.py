"""The pack store: batched appends, segment rollover, reads checked by SHA-256."""

from __future__ import annotations

from pathlib import Path

import pytest

from palais.storage import blobs
from palais.storage.blobs import BlobCorrupted, BlobStore, sha256_hex


def test_append_many_writes_each_blob_where_it_says(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    datas = [bytes([i]) * (i * 37 + 1) for i in range(50)] + [b""]
    places = store.append_many(datas)
    store.sync()
    assert len(places) == len(datas)
    for data, where in zip(datas, places, strict=True):
        assert where.length == len(data)
        assert store.read(where, sha256_hex(data)) == data
    store.close()


def test_append_many_rolls_over_to_a_new_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs, "SEGMENT_LIMIT", 1000)
    store = BlobStore(tmp_path)
    datas = [bytes([65 + i]) * 300 for i in range(7)] + [b"z" * 1500]
    places = store.append_many(datas)
    store.sync()
    assert len({p.segment for p in places}) >= 3
    for where in places:
        assert where.offset + where.length <= max(1500, 1000)
    for data, where in zip(datas, places, strict=True):
        assert store.read(where, sha256_hex(data)) == data
    with pytest.raises(BlobCorrupted):
        store.read(places[0], sha256_hex(b"something else"))
    store.close()
