"""Values derived from a message's bytes, kept in memory for the next reader.

A message's bytes never change while they exist (they are addressed by their
SHA-256), so whatever a front-end derives from them (an IMAP ENVELOPE, say)
stays true until the bytes are erased. The memo holds such values within a
byte budget, oldest first out, and forgets a message's values the moment its
bytes are erased: a permanently deleted message leaves nothing behind here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["Memo"]

# Per-entry bookkeeping (key tuple, dict slot, bytes header), counted against
# the budget so that many small values cannot outgrow it.
_OVERHEAD = 160


class Memo:
    def __init__(self, budget: int = 16 * 1024 * 1024) -> None:
        self._budget = budget
        self._used = 0
        self._values: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._aspects: dict[str, set[str]] = {}
        # The writer thread forgets erased blobs while sessions recall and
        # remember on the event loop.
        self._lock = threading.Lock()

    def recall(self, blob: str, aspect: str) -> bytes | None:
        return self._values.get((blob, aspect))

    def remember(self, blob: str, aspect: str, value: bytes) -> None:
        cost = len(value) + _OVERHEAD
        if cost > self._budget:
            return
        with self._lock:
            key = (blob, aspect)
            old = self._values.pop(key, None)
            if old is not None:
                self._used -= len(old) + _OVERHEAD
            self._values[key] = value
            self._aspects.setdefault(blob, set()).add(aspect)
            self._used += cost
            while self._used > self._budget:
                (gone_blob, gone_aspect), gone = self._values.popitem(last=False)
                self._used -= len(gone) + _OVERHEAD
                self._drop_aspect(gone_blob, gone_aspect)

    def forget(self, blob: str) -> None:
        with self._lock:
            for aspect in self._aspects.pop(blob, ()):
                value = self._values.pop((blob, aspect), None)
                if value is not None:
                    self._used -= len(value) + _OVERHEAD

    def __len__(self) -> int:
        return len(self._values)

    @property
    def used(self) -> int:
        return self._used

    def _drop_aspect(self, blob: str, aspect: str) -> None:
        aspects = self._aspects.get(blob)
        if aspects is not None:
            aspects.discard(aspect)
            if not aspects:
                del self._aspects[blob]
