"""A real single-replica TigerBeetle for the test session (the `tigerbeetle_url` fixture).

In order of preference:

1. `SOVR_TEST_TIGERBEETLE_ADDRESS` (and `SOVR_TEST_TIGERBEETLE_CLUSTER_ID`, default 0): use
   that running cluster as is. Tests use random ids and ledgers, so it may be shared.
2. A `tigerbeetle` binary (`TIGERBEETLE_BIN`, else on PATH): format a throwaway data file and
   start a replica on a loopback port the OS picks, killed at the end of the session.
3. Otherwise the tests that need it are skipped.

The replica runs with `--development` (no Direct IO needed, smallest caches) but with the
production request size (`--experimental --limit-request=1MiB`), so that batches of
`BATCH_EVENTS_MAX` events are accepted as on a production cluster: `--development` alone caps
requests at 32 KiB, about 250 transfers. It allocates ~1.75 GiB at start (~1.4 GiB without the
request-size flag), and its data file takes ~1.1 GiB, deleted when the session ends.

It is started with `--addresses=0`: TigerBeetle then binds 127.0.0.1 on a free port, prints
the port on stdout, and exits as soon as its stdin is closed -- so it cannot outlive the test
process even if that is killed.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV_ADDRESS = "SOVR_TEST_TIGERBEETLE_ADDRESS"
ENV_CLUSTER_ID = "SOVR_TEST_TIGERBEETLE_CLUSTER_ID"
ENV_BINARY = "TIGERBEETLE_BIN"
SKIP_REASON = (
    "no real TigerBeetle: set SOVR_TEST_TIGERBEETLE_ADDRESS or put a tigerbeetle binary on PATH"
)

START_FLAGS = ("--development", "--experimental", "--limit-request=1MiB")


def find_binary() -> str | None:
    """The tigerbeetle executable to run, or None."""
    explicit = os.environ.get(ENV_BINARY, "").strip()
    if explicit:
        return explicit
    return shutil.which("tigerbeetle")


class TigerBeetleServer:
    """One formatted and started single-replica cluster in `directory`."""

    def __init__(
        self,
        binary: str,
        directory: Path,
        *,
        cluster_id: int = 0,
        startup_timeout_seconds: float = 120.0,
        keep_data_file: bool = False,
    ) -> None:
        self.binary = binary
        self.directory = Path(directory)
        self.cluster_id = cluster_id
        self.startup_timeout_seconds = startup_timeout_seconds
        self.keep_data_file = keep_data_file
        self.data_file = self.directory / f"{cluster_id}_0.tigerbeetle"
        self.log_file = self.directory / "tigerbeetle.log"
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        assert self.port is not None, "server not started"
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"tigerbeetle://{self.cluster_id}@{self.address}"

    def start(self) -> str:
        """Format, start, wait until a client gets an answer; return the ledger URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        formatted = subprocess.run(
            [
                self.binary,
                "format",
                f"--cluster={self.cluster_id}",
                "--replica=0",
                "--replica-count=1",
                "--development",
                str(self.data_file),
            ],
            capture_output=True,
            timeout=self.startup_timeout_seconds,
            check=False,
        )
        if formatted.returncode != 0:
            raise RuntimeError(
                f"tigerbeetle format failed ({formatted.returncode}):\n"
                + formatted.stderr.decode(errors="replace")[-4000:]
            )

        deadline = time.monotonic() + self.startup_timeout_seconds
        with self.log_file.open("wb") as log:
            self._process = subprocess.Popen(
                [self.binary, "start", "--addresses=0", *START_FLAGS, str(self.data_file)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        try:
            self.port = self._read_port(deadline)
            self._wait_until_serving(deadline)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _read_port(self, deadline: float) -> int:
        process = self._process
        assert process is not None and process.stdout is not None
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(self._failure("did not print its port in time"))
                if not selector.select(timeout=min(remaining, 0.5)):
                    if process.poll() is not None:
                        raise RuntimeError(self._failure("exited during start-up"))
                    continue
                chunk = os.read(process.stdout.fileno(), 64)
                if not chunk:
                    raise RuntimeError(self._failure("exited during start-up"))
                line += chunk
        try:
            return int(line.strip())
        except ValueError:
            raise RuntimeError(self._failure(f"printed {line!r} instead of a port")) from None

    def _wait_until_serving(self, deadline: float) -> None:
        from sovr.ledger import LedgerUnavailableError
        from sovr.ledger.tigerbeetle_adapter import TigerBeetleLedger

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(self._failure("never answered a client"))
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(self._failure("exited during start-up"))
            with TigerBeetleLedger(
                self.cluster_id, self.address, timeout_seconds=min(remaining, 5.0)
            ) as ledger:
                try:
                    ledger.lookup_accounts([1])
                    return
                except LedgerUnavailableError:
                    continue

    def _failure(self, what: str) -> str:
        try:
            log = self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            log = "(no log)"
        return f"tigerbeetle start {what}; log {self.log_file}:\n{log}"

    def stop(self) -> None:
        """Stop the replica: closing stdin makes it exit; kill it if it lingers."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdout is not None:
            process.stdout.close()
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if not self.keep_data_file:
            # A --development data file is ~1.1 GiB, fully written: don't leave it behind.
            self.data_file.unlink(missing_ok=True)

    def __enter__(self) -> TigerBeetleServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def session_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Body of the session-scoped `tigerbeetle_url` fixture (see the module docstring)."""
    address = os.environ.get(ENV_ADDRESS, "").strip()
    if address:
        cluster_id = os.environ.get(ENV_CLUSTER_ID, "0").strip() or "0"
        yield f"tigerbeetle://{cluster_id}@{address}"
        return
    binary = find_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    with TigerBeetleServer(binary, tmp_path_factory.mktemp("tigerbeetle")) as server:
        yield server.url
