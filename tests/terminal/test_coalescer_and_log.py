"""Unit tests for the terminal's two group-commit pieces: the coalescer and the rejection log."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sovr.ledger.coalescer import Coalescer
from sovr.terminal.rejections import RejectionLog, RejectionRecord


def test_groups_share_batches_but_no_item_is_split_and_results_keep_order() -> None:
    seen_batches: list[list[list[int]]] = []
    gate = threading.Event()

    def handle(items: list[list[int]]) -> list[int]:
        gate.wait(5)
        seen_batches.append(items)
        return [sum(item) for item in items]

    coalescer = Coalescer("test", handle, max_weight=10, weight=len)
    try:
        first = coalescer.submit([[1, 2, 3]])  # taken alone while the gate is closed
        time.sleep(0.05)
        later = [coalescer.submit([[i] * 4, [i]]) for i in range(5)]
        gate.set()
        assert first.result(5) == [6]
        assert [f.result(5) for f in later] == [[4 * i, i] for i in range(5)]
    finally:
        coalescer.close()
    assert all(sum(len(item) for item in batch) <= 10 for batch in seen_batches)
    assert len(seen_batches) < 1 + 5 * 2, "queued groups were coalesced"
    assert {len(item) for batch in seen_batches for item in batch} <= {1, 3, 4}


def test_a_failing_batch_fails_its_groups_and_the_next_batches_still_run() -> None:
    def handle(items: list[str]) -> list[str]:
        if "boom" in items:
            raise ConnectionError("ledger down")
        return [item.upper() for item in items]

    coalescer = Coalescer("test", handle, max_weight=1)  # one item a batch
    try:
        bad = coalescer.submit(["boom"])
        with pytest.raises(ConnectionError):
            bad.result(5)
        assert coalescer.submit(["ok"]).result(5) == ["OK"]
    finally:
        coalescer.close()


def test_many_threads_get_their_own_results() -> None:
    coalescer = Coalescer("test", lambda items: [i * 2 for i in items], max_weight=64)
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda i: coalescer.submit([i, i + 1]).result(5), range(500)))
    finally:
        coalescer.close()
    assert results == [[2 * i, 2 * i + 2] for i in range(500)]


def test_rejection_log_is_durable_ordered_and_answers_the_first_rejection(tmp_path: Path) -> None:
    path = tmp_path / "rejections.sqlite3"
    log = RejectionLog(path, "t1")
    seqs = log.record_many([
        RejectionRecord("checkout", "order-1", "insufficient_funds", "too low", 7,
                        intent={"amount_cents": 350}),
        RejectionRecord("checkout", "order-2", "attestation_expired", "old", 9),
    ])
    log.record_many([RejectionRecord("checkout", "order-1", "intent_previously_rejected", "x")])
    log.close()
    reopened = RejectionLog(path, "t2")
    try:
        first = reopened.first_for("checkout", "order-1")
        assert first is not None and first.code == "insufficient_funds"
        assert first.obligation_id == 7 and first.intent == {"amount_cents": 350}
        assert first.terminal_id == "t1" and first.seq == seqs[0]
        assert reopened.first_for("other-caller", "order-1") is None
        assert [r.intent_id for r in reopened.read(after_seq=seqs[0])] == ["order-2", "order-1"]
    finally:
        reopened.close()


def test_a_version_0_narrative_log_is_upgraded_keeping_every_row_and_seq(tmp_path: Path) -> None:
    """Version 0 deduplicated with a unique index (see `sovr.terminal.narratives`): opening
    it drops the index and keeps the rows and their seqs (the mirror's cursor), and a
    retry's narrative is then appended like any other."""
    import sqlite3

    from sovr.terminal.narratives import COLUMNS, Narrative, NarrativeLog

    path = tmp_path / "narratives.sqlite3"
    told = [Narrative(n, 10 + n, "obligation", "studio", f"intent-{n}", f"said {n}")
            for n in range(1, 4)]
    log = NarrativeLog(path, "t1")
    log.record_many(told)
    log.close()
    db = sqlite3.connect(path)  # as version 0 left it: the unique index, user_version 0
    db.execute("CREATE UNIQUE INDEX v0_unique ON narratives (obligation_id, fingerprint)")
    db.execute("DELETE FROM narratives WHERE seq = 3")  # the sequence stays at 3
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    log = NarrativeLog(path, "t1")
    try:
        log.record_many([told[0]])  # a retry: appended, the mirror keeps the first
        rows = log.read()
        assert [(r[0], r[5]) for r in rows] == [(1, "intent-1"), (2, "intent-2"),
                                                (4, "intent-1")]
        said = COLUMNS.index("said")
        assert [r[said] for r in rows] == ["said 1", "said 2", "said 1"]
    finally:
        log.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (1,)
    assert [r for r in db.execute("PRAGMA index_list(narratives)") if r[2]] == []
    db.close()
