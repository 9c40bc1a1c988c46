"""`sovr bench ledger`: the measurement function on tiny runs, and the CLI end to end."""

from __future__ import annotations

import re
import tempfile

import pytest
import tigerbeetle as tb
from typer.testing import CliRunner

import sovr.ledger
from sovr.bench import ledger as bench
from sovr.cli import app


def all_of_ledger(ledger: sovr.ledger.Ledger, query) -> list:
    query_filter = tb.QueryFilter(
        user_data_128=0, user_data_64=0, user_data_32=0, ledger=bench.LEDGER, code=0,
        timestamp_min=0, timestamp_max=0, limit=8189, flags=tb.QueryFilterFlags.NONE,
    )
    return query(query_filter)


def test_tiny_run_reports_exact_counts(tmp_path) -> None:
    with sovr.ledger.connect("embedded://" + str(tmp_path / "ledger")) as ledger:
        result = bench.run_ledger_bench(
            ledger, accounts=50, batch_sizes=(1, 7, 100), transfers=23
        )
        assert result.accounts == 50
        by_size = {r.batch_size: r for r in result.results}
        assert list(by_size) == [1, 7, 100]
        assert [(r.transfers, r.batches) for r in result.results] == [(23, 23), (23, 4), (23, 1)]
        for r in result.results:
            assert r.seconds > 0
            assert r.transfers_per_second == pytest.approx(r.transfers / r.seconds)
            assert 0 < r.p50_ms <= r.p99_ms
        # What the ledger holds: the accounts, and 69 transfers between distinct accounts.
        accounts = all_of_ledger(ledger, ledger.query_accounts)
        transfers = all_of_ledger(ledger, ledger.query_transfers)
        assert len(accounts) == 50
        assert len(transfers) == 69
        assert all(t.debit_account_id != t.credit_account_id for t in transfers)
        assert sum(a.debits_posted for a in accounts) == sum(t.amount for t in transfers)
        assert sum(a.credits_posted for a in accounts) == sum(t.amount for t in transfers)


def test_random_ids_are_not_in_time_order(tmp_path) -> None:
    """--random-ids: ids drawn at random (as the terminal's are), so in timestamp order they
    go up and down; tigerbeetle.id()s only go up."""
    with sovr.ledger.connect("embedded://" + str(tmp_path / "ledger")) as ledger:
        for random_ids in (False, True):
            bench.run_ledger_bench(ledger, accounts=5, batch_sizes=(20,), transfers=40,
                                   random_ids=random_ids)
        transfers = sorted(all_of_ledger(ledger, ledger.query_transfers),
                           key=lambda t: t.timestamp)
    assert len(transfers) == 80
    time_based, random_ = [t.id for t in transfers[:40]], [t.id for t in transfers[40:]]
    assert time_based == sorted(time_based)
    assert random_ != sorted(random_) and all(0 < i <= 2**127 for i in random_)


def test_seconds_caps_each_batch_size(tmp_path) -> None:
    with sovr.ledger.connect("embedded://" + str(tmp_path / "ledger")) as ledger:
        result = bench.run_ledger_bench(ledger, accounts=10, batch_sizes=(1, 3), seconds=0.2)
    for r in result.results:
        assert r.transfers >= 1
        assert r.seconds < 0.2 + 0.5  # Time in create_transfers only, within the cap.


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert bench.percentile(values, 50) == 50.0
    assert bench.percentile(values, 99) == 99.0
    assert bench.percentile([3.0], 99) == 3.0
    assert bench.percentile([], 50) == 0.0


def test_a_result_other_than_created_fails_loudly(tmp_path) -> None:
    class Sabotaged:
        """Delegates to a real ledger, but makes the first transfer of each batch invalid."""

        def __init__(self, ledger) -> None:
            self.ledger = ledger

        def __getattr__(self, name):
            return getattr(self.ledger, name)

        def create_transfers(self, transfers):
            transfers[0].credit_account_id = transfers[0].debit_account_id
            return self.ledger.create_transfers(transfers)

    with (
        sovr.ledger.connect("embedded://" + str(tmp_path / "ledger")) as ledger,
        pytest.raises(bench.BenchError, match="ACCOUNTS_MUST_BE_DIFFERENT"),
    ):
        bench.run_ledger_bench(Sabotaged(ledger), accounts=5, batch_sizes=(4,), transfers=4)


def table_rows(output: str) -> dict[int, list[str]]:
    """Rows of the results table by batch size (cells as printed)."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) == 6 and cells[0].replace(",", "").isdigit():
            rows[int(cells[0].replace(",", ""))] = cells
    return rows


def test_cli_default_url_is_a_temporary_directory_deleted_afterwards(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["bench", "ledger", "--accounts", "20", "--batch-sizes", "1,5", "--transfers", "10"],
        env={"COLUMNS": "120"},
    )
    assert result.exit_code == 0, result.output
    assert "temporary, deleted afterwards" in result.output
    rows = table_rows(result.output)
    assert rows[1][1:3] == ["10", "10"]  # transfers, batches
    assert rows[5][1:3] == ["10", "2"]
    assert list(tmp_path.iterdir()) == []  # The temporary ledger is gone.


def test_cli_with_url(tmp_path) -> None:
    url = "embedded://" + str(tmp_path / "ledger")
    result = CliRunner().invoke(
        app,
        ["bench", "ledger", "--url", url, "--accounts", "3", "--batch-sizes", "2",
         "--transfers", "3", "--random-ids"],
        env={"COLUMNS": "120"},
    )
    assert result.exit_code == 0, result.output
    assert table_rows(result.output)[2][1:3] == ["3", "2"]
    with sovr.ledger.connect(url) as ledger:  # The given ledger is kept.
        assert len(all_of_ledger(ledger, ledger.query_transfers)) == 3


@pytest.mark.parametrize("sizes", ["0", "8190", "1,x", ""])
def test_cli_rejects_bad_batch_sizes(sizes) -> None:
    result = CliRunner().invoke(app, ["bench", "ledger", "--batch-sizes", sizes])
    assert result.exit_code == 2
