"""`sovr bench mirror` end to end on a tiny run: both phases measure real work and print it."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from sovr.cli import app


def test_tiny_mirror_bench_mirrors_everything_and_prints_both_figures() -> None:
    result = CliRunner().invoke(app, [
        "bench", "mirror", "--transfers", "3000", "--runs", "1", "--rate", "300",
        "--seconds", "2", "--batch-size", "50", "--users", "20", "--lag-runs", "1"])
    out = " ".join(result.output.split())
    assert result.exit_code == 0, out
    mirrored = re.search(r"run 1: ([\d,]+) transfers mirrored", out)
    assert mirrored and int(mirrored.group(1).replace(",", "")) >= 3000, out
    lag = re.search(r"lag run 1: ([\d,]+) intents/s cleared \((\d+) refused\).*?sync lag p50 "
                    r"(\d+) ms, p99 (\d+) ms.*?(\d+) not mirrored", out)
    assert lag, out
    cleared_per_second, refused, p50, p99, unmirrored = (
        int(g.replace(",", "")) for g in lag.groups())
    assert cleared_per_second > 100 and refused == 0
    assert p50 <= p99 < 60_000 and unmirrored == 0
    assert "medians of 1 runs" in out
