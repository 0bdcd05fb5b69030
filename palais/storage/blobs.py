"""Content-addressed store for message bytes, in append-only pack segments.

Messages are appended to the current segment and located by SHA-256 through
the ``blob`` table. Appending to one file lets a batch of submissions share a
single fsync instead of paying one per message file plus one per directory.
Permanent deletion overwrites the bytes with zeros so that deleted documents
really are gone from disk; a later compaction can reclaim the space.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from palais.mailbox.digest import sha256_hex
from palais.mailbox.ports import BlobCorrupted, BlobLocation

__all__ = ["SEGMENT_LIMIT", "BlobCorrupted", "BlobLocation", "BlobStore", "sha256_hex"]

SEGMENT_LIMIT = 256 * 1024 * 1024
_IOV_MAX = 1024  # Linux's limit on the buffers of one writev


class BlobStore:
    """``palais.mailbox.ports.MessageBytes`` in append-only pack files."""

    # Reads are a pread of a local file: cheap enough on the event loop.
    local = True

    def __init__(self, root: Path, *, node: str | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # A fresh segment per process start: a torn tail left by a crash is
        # never appended to, and several nodes never share a segment.
        self._node = node or uuid.uuid4().hex[:12]
        self._seq = 0
        self._lock = threading.Lock()
        self._read_fds: dict[str, int] = {}
        self._write_fd = -1
        self._write_name = ""
        self._write_pos = 0
        self._dirty = False

    def _open_next_segment(self) -> None:
        if self._write_fd >= 0:
            os.fsync(self._write_fd)
            os.close(self._write_fd)
        self._seq += 1
        self._write_name = f"{self._node}-{self._seq:06d}.pack"
        path = self.root / self._write_name
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._write_pos = os.fstat(self._write_fd).st_size
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new segment's name must survive a crash too
        finally:
            os.close(dir_fd)

    def append(self, data: bytes) -> BlobLocation:
        """Write bytes (not yet durable: call ``sync`` before relying on them)."""
        return self.append_many([data])[0]

    def append_many(self, datas: Sequence[bytes]) -> list[BlobLocation]:
        """Write several blobs one after the other, in as few system calls as can be."""
        out: list[BlobLocation] = []
        with self._lock:
            start = 0
            while start < len(datas):
                if self._write_fd < 0 or self._write_pos + len(datas[start]) > SEGMENT_LIMIT:
                    self._open_next_segment()
                # The run of blobs that fits in this segment (at least one).
                stop, size = start, 0
                while stop < len(datas) and (
                    stop == start or self._write_pos + size + len(datas[stop]) <= SEGMENT_LIMIT
                ):
                    out.append(
                        BlobLocation(self._write_name, self._write_pos + size, len(datas[stop]))
                    )
                    size += len(datas[stop])
                    stop += 1
                self._write_all(datas[start:stop])
                self._write_pos += size
                start = stop
            self._dirty = True
        return out

    def _write_all(self, datas: Sequence[bytes]) -> None:
        views = [memoryview(d) for d in datas if d]
        while views:
            written = os.writev(self._write_fd, views[:_IOV_MAX])
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if views and written:
                views[0] = views[0][written:]

    def sync(self) -> None:
        with self._lock:
            if self._dirty and self._write_fd >= 0:
                os.fdatasync(self._write_fd)
                self._dirty = False

    def _read_fd(self, segment: str) -> int:
        fd = self._read_fds.get(segment)
        if fd is None:
            if "/" in segment or segment.startswith("."):
                raise BlobCorrupted(f"bad segment name {segment!r}")
            fd = os.open(self.root / segment, os.O_RDONLY)
            self._read_fds[segment] = fd
        return fd

    def read(self, where: BlobLocation, sha256: str, *, length: int | None = None) -> bytes:
        """Read a blob (or its first ``length`` bytes, then unchecked)."""
        want = where.length if length is None else min(length, where.length)
        data = os.pread(self._read_fd(where.segment), want, where.offset)
        if len(data) != want:
            raise BlobCorrupted(f"short read for {sha256}")
        if length is None and sha256_hex(data) != sha256:
            raise BlobCorrupted(f"checksum mismatch for {sha256}")
        return data

    def erase(self, where: BlobLocation) -> None:
        """Overwrite a blob's bytes with zeros, durably."""
        fd = os.open(self.root / where.segment, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(where.length), where.offset)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            if self._write_fd >= 0:
                os.fsync(self._write_fd)
                os.close(self._write_fd)
                self._write_fd = -1
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
