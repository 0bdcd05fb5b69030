"""SHA-256 that keeps the interpreter lock for small inputs.

hashlib lets go of the GIL for every update of 2 KiB or more. For a
message of a few KiB that is microseconds of hashing against a wait to
take the lock back from the other busy thread (the event loop, or the
writer): under SMTP load the event loop's hash of a 4 KiB message took
twenty times its own cost in such waits. Below ``_HOLD`` bytes the data is
fed in slices under hashlib's threshold, so the lock is never let go;
larger inputs (a big attachment) still let the other threads run.
"""

from __future__ import annotations

import hashlib
from typing import Any

_SLICE = 2047  # hashlib's HASHLIB_GIL_MINSIZE is 2048
_HOLD = 64 * 1024


def sha256(*parts: bytes) -> Any:
    """A hashlib SHA-256 object over ``parts``, in order."""
    digest = hashlib.sha256()
    for part in parts:
        if len(part) < _SLICE or len(part) > _HOLD:
            digest.update(part)
            continue
        view = memoryview(part)
        for start in range(0, len(part), _SLICE):
            digest.update(view[start : start + _SLICE])
    return digest


def sha256_hex(data: bytes) -> str:
    return str(sha256(data).hexdigest())
