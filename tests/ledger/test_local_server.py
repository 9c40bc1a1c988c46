"""The engine shared over a Unix socket: what the terminal's worker processes rely on.

(The whole conformance suite also runs through it: the `local` backend of `ledger`.)"""

from __future__ import annotations

import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tigerbeetle as tb

import sovr.ledger
from sovr.ledger.local_server import LocalLedgerServer, _send

TS = tb.CreateTransferStatus


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[LocalLedgerServer, Path]]:
    engine = sovr.ledger.connect("embedded://" + str(tmp_path / "ledger"))
    engine.create_accounts([tb.Account(id=i, ledger=1, code=1) for i in (1, 2)])
    with tempfile.TemporaryDirectory(prefix="sovr-") as directory:
        server = LocalLedgerServer(engine, Path(directory) / "ledger.sock")
        try:
            yield server, server.path
        finally:
            server.close()
            engine.close()


def transfer(transfer_id: int, **fields) -> tb.Transfer:
    return tb.Transfer(id=transfer_id, debit_account_id=1, credit_account_id=2, amount=1,
                       ledger=1, code=1, **fields)


def test_the_socket_is_the_owners_alone(served) -> None:
    _, path = served
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_one_workers_bad_batch_fails_only_that_worker(served) -> None:
    """Concurrent batches are merged into one engine batch; a refused merge is retried
    batch by batch, so the error reaches its own caller and the good batches still clear."""
    _, path = served
    outcomes: dict[str, object] = {}

    def send(name: str, batch: list[tb.Transfer]) -> None:
        with sovr.ledger.connect(f"local://{path}") as ledger:
            try:
                outcomes[name] = [r.status for r in ledger.create_transfers(batch)]
            except Exception as error:  # noqa: BLE001 - the test inspects it
                outcomes[name] = error

    threads = [threading.Thread(target=send, args=(f"good-{i}", [transfer(100 + i)]))
               for i in range(8)]
    threads.append(threading.Thread(target=send, args=("bad", [transfer(99, user_data_32=2**40)])))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert isinstance(outcomes["bad"], Exception)
    assert all(outcomes[f"good-{i}"] == [TS.CREATED] for i in range(8)), outcomes
    with sovr.ledger.connect(f"local://{path}") as ledger:
        assert len(ledger.lookup_transfers([100 + i for i in range(8)])) == 8


def test_errors_keep_their_type(served) -> None:
    _, path = served
    with sovr.ledger.connect(f"local://{path}") as ledger, pytest.raises(
        tb.client.TooMuchDataError
    ):
        ledger.create_transfers([transfer(i + 1) for i in range(8190)])


def test_a_stopped_server_is_unavailable_not_silent(served) -> None:
    server, path = served
    ledger = sovr.ledger.connect(f"local://{path}")
    server.close()
    with pytest.raises(sovr.ledger.LedgerUnavailableError):
        ledger.lookup_accounts([1])
    ledger.close()


def test_odd_batches_get_the_engines_own_errors(served) -> None:
    """Transfers cross the socket as tuples of their fields; what cannot be read as a
    transfer crosses as it is, so the caller gets the error the engine itself raises."""
    server, path = served
    odd_batches = [
        [object()],
        ["not a transfer"],
        [transfer(7, flags=1.0)],
        [transfer(7, timeout="1")],
        [transfer(7, user_data_64=1 << 64)],
        [transfer(7), 5],
    ]
    with sovr.ledger.connect(f"local://{path}") as ledger:
        for batch in odd_batches:
            with pytest.raises(Exception) as direct:
                server.ledger.create_transfers(batch)
            with pytest.raises(Exception) as remote:
                ledger.create_transfers(batch)
            assert type(remote.value) is type(direct.value), batch
            assert str(remote.value) == str(direct.value), batch
        assert ledger.lookup_transfers([7]) == []
        flags = tb.TransferFlags.LINKED
        results = ledger.create_transfers([transfer(7, flags=flags), transfer(8)])
        assert [(type(r), r.status) for r in results] == [
            (tb.CreateTransferResult, TS.CREATED), (tb.CreateTransferResult, TS.CREATED)]
        assert [r.timestamp for r in results] == [
            t.timestamp for t in ledger.lookup_transfers([7, 8])]


def test_a_client_gone_before_its_answer_leaves_the_server_serving(served) -> None:
    """A worker killed mid-request: its answer meets a closed socket. That connection's
    thread ends quietly and the next client is served."""
    _, path = served
    failures = []
    previous_hook = threading.excepthook
    threading.excepthook = failures.append
    try:
        for _ in range(50):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(str(path))
                _send(client, ("get_change_events", (0, 0, 8189)))
        with sovr.ledger.connect(f"local://{path}") as ledger:
            assert [a.id for a in ledger.lookup_accounts([1, 2])] == [1, 2]
    finally:
        threading.excepthook = previous_hook
    assert failures == []
