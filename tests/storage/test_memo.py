"""The memo of values derived from message bytes: budget and forgetting."""

from __future__ import annotations

import threading

from palais.storage.memo import Memo


def test_recall_what_was_remembered_per_aspect() -> None:
    memo = Memo()
    memo.remember("a" * 64, "imap.envelope", b"(env)")
    memo.remember("a" * 64, "imap.envelope.utf8", b"(env8)")
    assert memo.recall("a" * 64, "imap.envelope") == b"(env)"
    assert memo.recall("a" * 64, "imap.envelope.utf8") == b"(env8)"
    assert memo.recall("b" * 64, "imap.envelope") is None


def test_oldest_values_leave_first_within_the_budget() -> None:
    memo = Memo(budget=10 * (100 + 160))
    for i in range(25):
        memo.remember(f"{i:064d}", "x", b"v" * 100)
    assert memo.used <= 10 * (100 + 160)
    assert len(memo) == 10
    assert memo.recall(f"{0:064d}", "x") is None
    assert memo.recall(f"{24:064d}", "x") == b"v" * 100
    # Forgetting an evicted blob is harmless and the books stay balanced.
    memo.forget(f"{0:064d}")
    for i in range(15, 25):
        memo.forget(f"{i:064d}")
    assert len(memo) == 0 and memo.used == 0


def test_replacing_a_value_does_not_leak_budget() -> None:
    memo = Memo(budget=1000)
    for _ in range(50):
        memo.remember("a" * 64, "x", b"v" * 200)
    assert len(memo) == 1 and memo.used == 200 + 160


def test_a_value_larger_than_the_budget_is_not_kept() -> None:
    memo = Memo(budget=100)
    memo.remember("a" * 64, "x", b"v" * 500)
    assert memo.recall("a" * 64, "x") is None and memo.used == 0


def test_forget_removes_every_aspect_from_another_thread() -> None:
    memo = Memo()
    for i in range(200):
        memo.remember(f"{i:064d}", "x", b"1")
        memo.remember(f"{i:064d}", "y", b"2")

    def forget_evens() -> None:
        for i in range(0, 200, 2):
            memo.forget(f"{i:064d}")

    worker = threading.Thread(target=forget_evens)
    worker.start()
    for i in range(200, 400):
        memo.remember(f"{i:064d}", "x", b"3")
    worker.join()
    assert all(memo.recall(f"{i:064d}", a) is None for i in range(0, 200, 2) for a in "xy")
    assert all(memo.recall(f"{i:064d}", "y") == b"2" for i in range(1, 200, 2))
    assert len(memo) == 100 * 2 + 200
