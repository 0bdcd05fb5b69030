"""The fuzz tests' fixed budget: a few hundred examples each, reproducible in CI.

Every property uses ``FUZZ`` (or ``fuzz(n)`` for a heavier one) rather than a
global hypothesis profile, so loading this package changes no other test's
settings. ``CI=true`` derandomizes (the same examples on every run, so CI
never fails on a case it did not fail on before); locally each run draws new
examples. ``PALAIS_FUZZ_SCALE=20`` multiplies the example counts for a
longer local run.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SCALE = max(1, int(os.environ.get("PALAIS_FUZZ_SCALE", "1")))

# The machine is shared and may be loaded: the deadline catches a hang or a
# quadratic blow-up, not ordinary jitter.
DEADLINE = timedelta(seconds=2)
# Bounds each test (pytest-timeout) whatever the example count.
TEST_TIMEOUT = 30 * SCALE


def fuzz(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples * SCALE,
        deadline=DEADLINE,
        derandomize=IN_CI,
        database=None,  # no .hypothesis/ directory in the shared working tree
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


FUZZ = fuzz(200)
