"""The `sovr` command: `sovr up` and `sovr bench ledger`."""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import sovr
import sovr.ledger
from sovr.bench import ledger as ledger_bench

HELP = "\n\n".join(
    [
        f"sovr {sovr.__version__}: an obligation clearing network on TigerBeetle's model of "
        "money.",
        "[bold]Environment[/bold]",
        "[cyan]SOVR_DATA_DIR[/cyan]: where sovr keeps its data; the embedded ledger is "
        "$SOVR_DATA_DIR/ledger (default: ./data, so ./data/ledger).",
        "[cyan]TIGERBEETLE_ADDRESSES[/cyan]: comma-separated addresses of a TigerBeetle "
        "cluster's replicas. When set, sovr uses that cluster as its ledger instead of the "
        "embedded one.",
        "[cyan]TIGERBEETLE_CLUSTER_ID[/cyan]: that cluster's id (default: 0).",
        "[cyan]ATTESTOR_PRIVATE_KEY[/cyan] (hex) or [cyan]ATTESTOR_KEYSTORE_FILE[/cyan] with "
        "[cyan]ATTESTOR_KEYSTORE_PASSWORD[/cyan] or [cyan]ATTESTOR_KEYSTORE_PASSWORD_FILE[/cyan]: "
        "the attestor's signing key; [cyan]ATTESTOR_ALLOWED_SIGNERS[/cyan]: the addresses whose "
        "attestations are accepted. Read by the attestor module (sovr.attestor); no command "
        "serves it over HTTP yet.",
        "[cyan]ORACLE_LEDGER_DATABASE_URL[/cyan]: reserved for the PostgreSQL mirror, which is "
        "not in this version yet; no command reads it today.",
    ]
)

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
bench_app = typer.Typer(
    help="Measure sovr's components.", no_args_is_help=True, rich_markup_mode="rich"
)
app.add_typer(bench_app, name="bench")

console = Console()
err_console = Console(stderr=True)


@app.command()
def up() -> None:
    """Open the ledger and keep it open until Ctrl-C or SIGTERM.

    The embedded engine in $SOVR_DATA_DIR/ledger, or the TigerBeetle cluster that TIGERBEETLE_ADDRESSES names. (Later versions add sovr's HTTP services here.)
    """  # noqa: E501 - one paragraph per line: the help output wraps it.
    url = sovr.ledger.default_url()
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        try:
            ledger = sovr.ledger.connect(url)
        except sovr.ledger.LedgerError as error:
            err_console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from None
        try:
            ledger.lookup_accounts([1])  # A round trip: the ledger answers.
            where = url.removeprefix("embedded://") if url.startswith("embedded://") else url
            console.print(f"ledger: {url}", soft_wrap=True)
            console.print(f"[green]ledger ready[/green] at {where}. Ctrl-C or SIGTERM stops.")
            while not stop.wait(0.5):
                pass
            console.print("stopping")
        except sovr.ledger.LedgerError as error:
            err_console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from None
        finally:
            ledger.close()
        console.print("ledger closed")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def parse_batch_sizes(value: str) -> list[int]:
    try:
        sizes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{value!r}: expected comma-separated integers") from None
    limit = sovr.ledger.BATCH_EVENTS_MAX
    if not sizes or any(not 1 <= s <= limit for s in sizes):
        raise typer.BadParameter(f"{value!r}: each batch size must be 1 to {limit}")
    return sizes


@contextlib.contextmanager
def bench_target(url: str | None) -> Iterator[tuple[str, str]]:
    """(url, description): the given URL, or a fresh embedded directory deleted afterwards."""
    if url:
        yield url, url
        return
    with tempfile.TemporaryDirectory(prefix="sovr-bench-") as directory:
        url = "embedded://" + directory
        yield url, f"{url} (temporary, deleted afterwards)"


@bench_app.command("ledger")
def bench_ledger(
    url: Annotated[
        str | None,
        typer.Option(
            help="Ledger URL (embedded://DIR or tigerbeetle://CLUSTER_ID@ADDR[,ADDR...]). "
            "Default: a fresh temporary embedded ledger, deleted afterwards."
        ),
    ] = None,
    accounts: Annotated[
        int, typer.Option(min=2, help="Accounts to create (ledger 1, code 1).")
    ] = ledger_bench.DEFAULT_ACCOUNTS,
    batch_sizes: Annotated[
        str, typer.Option(help="Comma-separated batch sizes, each 1 to 8189.")
    ] = ",".join(map(str, ledger_bench.DEFAULT_BATCH_SIZES)),
    transfers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Transfers per batch size. Default (with no --seconds): 20,000 for size 1, "
            "10,000 batches for sizes up to 100, 5,000,000 above, each capped at 20 s.",
        ),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="Wall-clock cap per batch size (alone or with --transfers)."
        ),
    ] = None,
) -> None:
    """Transfers/s and batch latency of a ledger.

    Creates the accounts, then for each batch size in turn submits transfers between random pairs of distinct accounts. Only the create_transfers calls are timed; every result must be CREATED.
    """  # noqa: E501 - one paragraph per line: the help output wraps it.
    sizes = parse_batch_sizes(batch_sizes)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with bench_target(url) as (target, description):
            console.print(f"ledger: {description}", soft_wrap=True)
            with (
                sovr.ledger.connect(target) as ledger,
                Progress(*columns, console=console, transient=False) as progress,
            ):
                tasks: dict[int, int] = {}
                current = [progress.add_task(f"{accounts:,} accounts", total=None)]

                def on_start(size: int, cap: int | None) -> None:
                    if not tasks:
                        progress.update(current[0], total=1, completed=1)
                    progress.stop_task(current[0])  # Freezes its clock (call once only).
                    tasks[size] = current[0] = progress.add_task(
                        f"batch size {size:,}", total=cap
                    )

                def on_batch(size: int, n: int) -> None:
                    progress.advance(tasks[size], n)

                result = ledger_bench.run_ledger_bench(
                    ledger, accounts=accounts, batch_sizes=sizes, transfers=transfers,
                    seconds=seconds, on_start=on_start, on_batch=on_batch,
                )
                progress.stop_task(current[0])
    except ledger_bench.BenchError as error:
        err_console.print(f"[bold red]benchmark failed:[/bold red] {error}")
        raise typer.Exit(1) from None
    except sovr.ledger.LedgerError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None
    console.print(results_table(result))
    if result.memory:
        samples = ", ".join(f"{stored / 1e6:.0f}M: {mib:.0f}" for stored, mib in result.memory)
        console.print(f"resident memory (MiB) by transfers stored: {samples}")


def results_table(result: ledger_bench.LedgerBenchResult) -> Table:
    table = Table(
        title=f"create_transfers, {result.accounts:,} accounts "
        f"(created in {result.account_seconds:.2f} s)"
    )
    table.add_column("batch size", justify="right")
    table.add_column("transfers", justify="right")
    table.add_column("batches", justify="right")
    table.add_column("transfers/s", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    for r in result.results:
        table.add_row(
            f"{r.batch_size:,}", f"{r.transfers:,}", f"{r.batches:,}",
            f"{r.transfers_per_second:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
        )
    return table


if __name__ == "__main__":
    app()
