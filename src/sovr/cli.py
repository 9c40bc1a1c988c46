"""The `sovr` command: `sovr up` and `sovr bench ledger`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator
from typing import Annotated

import typer
import uvicorn
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
from sovr import server
from sovr.attestor import Attestor, AttestorKeyError
from sovr.bench import ledger as ledger_bench
from sovr.bench import mirror as mirror_bench
from sovr.bench import terminal as terminal_bench
from sovr.clearing import chart
from sovr.gateway.keys import DEFAULT_RATE_PER_SECOND, KeyStore, Scope
from sovr.gateway.logs import configure_logging
from sovr.ledger.local_server import LocalLedgerServer
from sovr.mirror import cli as mirror_cli
from sovr.mirror.postgres import MirrorDatabase, MirrorDatabaseError
from sovr.mirror.service import MirrorProcess, MirrorService
from sovr.workers import (
    KEEP_ALIVE_SECONDS,
    ServingServer,
    WorkersFailing,
    serve_workers,
    terminal_config,
)

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
        "[cyan]SOVR_HOST[/cyan] / [cyan]SOVR_PORT[/cyan]: where `sovr up` listens (default "
        "127.0.0.1:8080). [cyan]SOVR_WORKERS[/cyan]: terminal processes (default: one per "
        "CPU). [cyan]SOVR_LEDGER_URL[/cyan]: the ledger URL itself (embedded://DIR, "
        "local://SOCKET, tigerbeetle://ID@ADDRS), overriding the variables above. "
        "[cyan]SOVR_LINGER_SECONDS[/cyan]: how long a terminal lets concurrent intents gather "
        "into one ledger request (0.002). [cyan]SOVR_TERMINAL_ID[/cyan]: this terminal's name "
        "in logs and the rejection log (default: the host name). [cyan]SOVR_LOG_LEVEL[/cyan]: "
        "INFO (default) logs one JSON line per request; WARNING logs only problems.",
        "[cyan]ATTESTOR_PRIVATE_KEY[/cyan] (hex) or [cyan]ATTESTOR_KEYSTORE_FILE[/cyan] with "
        "[cyan]ATTESTOR_KEYSTORE_PASSWORD[/cyan] or [cyan]ATTESTOR_KEYSTORE_PASSWORD_FILE[/cyan]: "
        "the attestor's signing key (default: a development key generated into "
        "$SOVR_DATA_DIR/attestor). [cyan]ATTESTOR_ALLOWED_SIGNERS[/cyan]: the addresses whose "
        "attestations the terminal accepts (default: the attestor's own). "
        "[cyan]SOVR_ATTESTATION_MAX_AGE_SECONDS[/cyan]: how old an attestation may be (3600).",
        "[cyan]ORACLE_LEDGER_DATABASE_URL[/cyan]: the Oracle Ledger mirror's PostgreSQL "
        "(14+). Unset, sovr runs a private embedded PostgreSQL in $SOVR_DATA_DIR/mirror/postgres "
        "(`sovr db url` prints how to open psql on it). [cyan]SOVR_MIRROR[/cyan]: `off` keeps "
        "`sovr up` from running the mirror's sync worker (run `sovr mirror` instead).",
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
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
mirror_cli.register(app)

console = Console()
err_console = Console(stderr=True)


@app.command()
def up() -> None:
    """Start the whole network on this machine until Ctrl-C or SIGTERM.

    The ledger (embedded in $SOVR_DATA_DIR/ledger, or the TigerBeetle cluster TIGERBEETLE_ADDRESSES names), the Credit Terminal ($SOVR_WORKERS processes, default one per CPU) and the Attestor, on http://$SOVR_HOST:$SOVR_PORT (default 127.0.0.1:8080). On a data directory with no API key yet, it creates a development key for caller "dev" with every scope and writes it to $SOVR_DATA_DIR/development-api-key.
    """  # noqa: E501 - one paragraph per line: the help output wraps it.
    settings = server.Settings.from_env()
    configure_logging(os.environ.get("SOVR_LOG_LEVEL", "INFO"))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        engine = sovr.ledger.connect(settings.ledger_url)
    except sovr.ledger.LedgerError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    try:
        attestor_, development = server.load_attestor(settings.data_dir)
        chart.ensure_chart(engine)
        with _shared_ledger(settings, engine) as shared_url, \
                _mirror(settings, engine, shared_url) as (mirror_lines, mirror_url):
            _announce(settings, attestor_.address, development, mirror_lines)
            # The terminal's mirror routes read the database `up` opened (workers inherit it).
            settings = dataclasses.replace(settings, mirror_database_url=mirror_url)
            if mirror_url:
                os.environ["ORACLE_LEDGER_DATABASE_URL"] = mirror_url
            if settings.workers == 1:
                _serve_in_this_process(settings, engine, attestor_)
            else:
                _serve_with_workers(settings, shared_url)
    except (sovr.ledger.LedgerError, AttestorKeyError, ValueError, OSError,
            WorkersFailing) as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    finally:
        engine.close()
        console.print("stopped; ledger closed")


@contextlib.contextmanager
def _mirror(settings: server.Settings, engine,
            shared_url: str | None) -> Iterator[tuple[list[str], str | None]]:
    """The Oracle Ledger mirror beside the network: its database and sync worker.

    With worker processes the sync worker is a process of its own too (`sovr mirror`, on the
    shared ledger URL), so mirroring never takes the engine's or a terminal's core time
    under one GIL; with `SOVR_WORKERS=1` it is a thread of this process.

    Clearing never waits for it: if its PostgreSQL cannot start, `up` says so and serves
    without a mirror (`sovr mirror` can catch up later from the ledger and the outboxes).
    """
    if not settings.mirror:
        yield ["mirror:    off (SOVR_MIRROR=off; `sovr mirror` can follow the ledger instead)"], \
            settings.mirror_database_url
        return
    database = MirrorDatabase.from_settings(settings.data_dir, settings.mirror_database_url)
    try:
        url = database.open()
    except MirrorDatabaseError as error:
        yield [f"[yellow]mirror:    not started: {error}[/yellow]"], None
        return
    if shared_url is None:
        service = MirrorService(url, engine, settings.data_dir,
                                terminal_id=settings.terminal_id).start()
    else:
        feed_directory = (_embedded_directory(settings.ledger_url)
                          if settings.ledger_url.startswith("embedded://") else None)
        service = MirrorProcess(url, shared_url, feed_directory).start()
    lines = [f"mirror:    {_redacted(url)} (Oracle Ledger, PostgreSQL)"]
    if database.embedded is not None:
        lines.append(f"psql:      {database.embedded.psql_command()}")
    try:
        yield lines, url
    finally:
        service.close()
        database.close()


def _embedded_directory(ledger_url: str) -> str:
    from urllib.parse import unquote

    return unquote(ledger_url.partition("://")[2])


def _redacted(url: str) -> str:
    """`url` without its password, for printing."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


def _serve_in_this_process(settings: server.Settings, engine, attestor_) -> None:
    network = server.Network(settings, engine, attestor_,
                             server.allowed_signers(attestor_))
    try:
        server.tune_gc()
        ServingServer(terminal_config(network.app, host=settings.host, port=settings.port),
                      on_serving=_ready).run()
    finally:
        network.close(ledger=False)  # `up` closes the engine it opened


@contextlib.contextmanager
def _shared_ledger(settings: server.Settings, engine) -> Iterator[str | None]:
    """The ledger URL other processes use (None when everything runs in this process): the
    engine served on a Unix socket, or the TigerBeetle cluster itself."""
    if settings.workers == 1:
        yield None
        return
    if not settings.ledger_url.startswith("embedded://"):
        yield settings.ledger_url
        return
    ledger_server = LocalLedgerServer(engine, server.ledger_socket_path(settings.data_dir))
    try:
        yield f"local://{ledger_server.path}"
    finally:
        ledger_server.close()


def _serve_with_workers(settings: server.Settings, shared_url: str) -> None:
    os.environ[server.WORKER_LEDGER_URL] = shared_url
    server.tune_gc()  # this process holds the engine: its full collections stalled every call
    serve_workers(settings.workers, settings.host, settings.port, on_serving=_ready)


def _announce(settings: server.Settings, attestor_address: str, development: bool,
              mirror_lines: list[str]) -> None:
    keys = KeyStore(settings.data_dir / "gateway" / "keys.sqlite3")
    try:
        created = server.ensure_development_key(keys, settings.data_dir)
    finally:
        keys.close()
    base = f"http://{settings.host}:{settings.port}"
    console.print(f"ledger:    {settings.ledger_url}", soft_wrap=True)
    console.print(f"terminal:  {base}/v1  ({settings.workers} worker process"
                  f"{'es' if settings.workers > 1 else ''}; OpenAPI docs: {base}/docs)",
                  soft_wrap=True)
    console.print(f"attestor:  {base}/v1/attestations  (signer {attestor_address}"
                  + (", a development key: set ATTESTOR_PRIVATE_KEY for real use)"
                     if development else ")"), soft_wrap=True)
    for line in mirror_lines:
        console.print(line, soft_wrap=True)
    key_file = settings.data_dir / server.DEV_KEY_FILE
    if created:
        console.print(f"API key:   created a development key (all scopes) in {key_file}",
                      soft_wrap=True)
    elif key_file.exists():
        console.print(f"API key:   the development key is in {key_file}", soft_wrap=True)
    else:
        console.print("API key:   create one with `sovr keys create --caller NAME --scope "
                      "studio`", soft_wrap=True)


def _ready() -> None:
    """Said once the terminal answers requests: a client may connect the moment it reads it."""
    console.print("[green]ready[/green]. Ctrl-C or SIGTERM stops.")


@app.command()
def init() -> None:
    """Create the data directory, the chart of accounts and a development API key (idempotent; `sovr up` does the same at start)."""  # noqa: E501
    settings = server.Settings.from_env()
    try:
        network = server.Network.open(settings)
    except (sovr.ledger.LedgerError, AttestorKeyError, ValueError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    try:
        created = server.ensure_development_key(network.keys, settings.data_dir)
        console.print(f"chart of accounts ready in {settings.ledger_url}", soft_wrap=True)
        if created:
            console.print(f"development API key written to "
                          f"{settings.data_dir / server.DEV_KEY_FILE}", soft_wrap=True)
    finally:
        network.close()


def _key_store() -> KeyStore:
    settings = server.Settings.from_env()
    return KeyStore(settings.data_dir / "gateway" / "keys.sqlite3")


@keys_app.command("create")
def keys_create(
    caller: Annotated[str, typer.Option(help="The client this key belongs to; transfer ids "
                                        "are derived from it.")],
    scope: Annotated[list[Scope], typer.Option(help="Repeat for several scopes.")],
    rate: Annotated[int, typer.Option(min=1, help="Requests a second (token bucket).")] = (
        DEFAULT_RATE_PER_SECOND),
) -> None:
    """Create an API key and print its token (shown once; only its hash is kept)."""
    store = _key_store()
    try:
        key, token = store.create(caller, list(scope), rate_per_second=rate)
    except ValueError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    finally:
        store.close()
    err_console.print(f"key {key.key_id} for caller {key.caller}, scopes "
                      f"{', '.join(sorted(key.scopes))}:")
    print(token)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never their tokens)."""
    store = _key_store()
    table = Table("key id", "caller", "scopes", "rate/s", "revoked")
    for key in store.list():
        table.add_row(key.key_id, key.caller, ",".join(sorted(key.scopes)),
                      str(key.rate_per_second), "yes" if key.revoked_at else "")
    store.close()
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key (running terminals stop accepting it within 5 s)."""
    store = _key_store()
    try:
        store.revoke(key_id)
    except ValueError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    finally:
        store.close()
    console.print(f"revoked {key_id}")


@app.command()
def attestor(
    port: Annotated[int, typer.Option(help="Where the attestor listens.")] = 8081,
) -> None:
    """Run the Attestor alone (sign and verify EIP-712 intents; no ledger)."""
    settings = server.Settings.from_env()
    configure_logging(os.environ.get("SOVR_LOG_LEVEL", "INFO"))
    try:
        app_, signer = server.attestor_app(settings)
    except (AttestorKeyError, ValueError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(f"attestor:  http://{settings.host}:{port}/v1/attestations (signer {signer})",
                  soft_wrap=True)
    uvicorn.run(app_, host=settings.host, port=port, log_config=None, access_log=False,
                timeout_keep_alive=KEEP_ALIVE_SECONDS)


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
    random_ids: Annotated[
        bool,
        typer.Option(help="Random transfer ids, as the terminal's derived ids are, instead "
                     "of time-based tigerbeetle.id()."),
    ] = False,
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
                    seconds=seconds, random_ids=random_ids, on_start=on_start,
                    on_batch=on_batch,
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


@bench_app.command("terminal")
def bench_terminal(
    url: Annotated[str | None, typer.Option(
        help="A running terminal (http://HOST:PORT). Default: start `sovr up` on a fresh "
        "temporary data directory and stop it afterwards.")] = None,
    api_key: Annotated[str | None, typer.Option(
        envvar="SOVR_API_KEY", help="With --url: a key with the operator scope.")] = None,
    users: Annotated[int, typer.Option(min=1, help="Distinct payers.")] = 1000,
    batch_size: Annotated[int, typer.Option(min=1, max=8189)] = 8189,
    batches: Annotated[int, typer.Option(min=1)] = 6,
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrencies for "
                                             "single-intent requests.")] = "16,64,256",
    seconds: Annotated[float, typer.Option(min=0.1, help="Seconds per concurrency.")] = 8.0,
    offered_rate: Annotated[int, typer.Option(min=0, help="Open-loop rate for the latency "
                                              "phase (0 skips it).")] = 2000,
    offered_seconds: Annotated[float, typer.Option(min=0.1)] = 10.0,
) -> None:
    """Clear signed intents over HTTP; print cleared intents/s and latency p50/p99.

    With --url, set ATTESTOR_PRIVATE_KEY to the key of an attestor that terminal accepts.
    """
    levels = tuple(int(c) for c in concurrency.split(",") if c.strip())
    config = terminal_bench.BenchConfig(users, batch_size, batches, levels, seconds,
                                        offered_rate, offered_seconds)
    table = Table("phase", "cleared", "refused", "intents/s", "p50 ms", "p99 ms")

    def report(phase: terminal_bench.Phase) -> None:
        console.print(f"{phase.name}: {phase.per_second:,.0f} intents/s, "
                      f"p50 {phase.percentile_ms(0.5):.1f} ms, "
                      f"p99 {phase.percentile_ms(0.99):.1f} ms")
        table.add_row(phase.name, f"{phase.cleared:,}", f"{phase.refused:,}",
                      f"{phase.per_second:,.0f}", f"{phase.percentile_ms(0.5):.1f}",
                      f"{phase.percentile_ms(0.99):.1f}")

    with _terminal_target(url, api_key) as (base, key, attestor_key):
        console.print(f"terminal: {base}; attestation verification on; {users} payers")
        asyncio.run(terminal_bench.run_bench(base, key, Attestor(attestor_key), config, report))
    console.print(table)


@bench_app.command("mirror")
def bench_mirror(
    transfers: Annotated[int, typer.Option(min=3, help="Transfers to mirror per run.")] = 300_000,
    runs: Annotated[int, typer.Option(min=1)] = 3,
    rate: Annotated[int, typer.Option(min=0, help="Intents/s offered to `sovr up` for the "
                                      "lag phase (0 skips it).")] = 5000,
    seconds: Annotated[float, typer.Option(min=1)] = 20.0,
    batch_size: Annotated[int, typer.Option(min=1, max=8189)] = 100,
    users: Annotated[int, typer.Option(min=1)] = 1000,
    lag_runs: Annotated[int, typer.Option(min=1, help="Lag runs, each on a fresh `sovr up`; "
                                          "medians are printed.")] = 3,
) -> None:
    """Mirror throughput (transfers/s into PostgreSQL) and sync lag while clearing."""
    def report(run: int, mirrored: int, seconds_: float) -> None:
        console.print(f"run {run + 1}: {mirrored:,} transfers mirrored in {seconds_:.2f} s = "
                      f"{mirrored / seconds_:,.0f} transfers/s")

    figures = mirror_bench.mirror_throughput(transfers, runs, report)
    console.print(f"[bold]mirror throughput: median {mirror_bench.median(figures):,.0f} "
                  f"transfers/s[/bold] over {runs} runs (target >= 20,000)")
    if not rate:
        return
    results = []
    for run in range(lag_runs):
        result = mirror_bench.lag_under_load(rate, seconds, batch_size, users)
        results.append(result)
        console.print(
            f"lag run {run + 1}: {result.per_second:,.0f} intents/s cleared "
            f"({result.refused} refused) for {result.seconds:.1f} s; sync lag p50 "
            f"{result.lag_ms(0.5):.0f} ms, p99 {result.lag_ms(0.99):.0f} ms, max "
            f"{result.lag_ms(1.0):.0f} ms; {result.unmirrored} not mirrored within 60 s")
    def median_of(figure) -> float:
        return mirror_bench.median([figure(r) for r in results])

    console.print(
        f"[bold]lag while clearing, medians of {lag_runs} runs: "
        f"{median_of(lambda r: r.per_second):,.0f} intents/s cleared; sync lag p50 "
        f"{median_of(lambda r: r.lag_ms(0.5)):.0f} ms, p99 "
        f"{median_of(lambda r: r.lag_ms(0.99)):.0f} ms, max "
        f"{median_of(lambda r: r.lag_ms(1.0)):.0f} ms[/bold] (target < 1,000 ms at 5,000/s)")


@contextlib.contextmanager
def _terminal_target(url: str | None, api_key: str | None):
    if url is None:
        with terminal_bench.local_terminal() as target:
            yield target
        return
    attestor_key = os.environ.get("ATTESTOR_PRIVATE_KEY")
    if not api_key or not attestor_key:
        err_console.print("[red]error:[/red] with --url, give --api-key (or SOVR_API_KEY) and "
                          "ATTESTOR_PRIVATE_KEY")
        raise typer.Exit(2)
    yield url.rstrip("/"), api_key, attestor_key
