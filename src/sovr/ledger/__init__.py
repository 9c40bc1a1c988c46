"""The clearing ledger: one boundary over two backends with TigerBeetle's semantics.

`connect(url)` returns an object with the eight operations of the official `tigerbeetle`
client's `ClientSync`, taking and returning that package's own types, plus the change feed
(`get_change_events`), `close()` and context-manager use:

- `embedded://PATH` (the default on one machine): `sovr.ledger.embedded`, an in-process
  engine durable in directory PATH (`embedded:///abs/path` or `embedded://relative/path`).
- `tigerbeetle://CLUSTER_ID@ADDR[,ADDR...]`: `sovr.ledger.tigerbeetle_adapter`, the official
  client against a real cluster.
"""

from __future__ import annotations

import os
from typing import Protocol
from urllib.parse import unquote

from tigerbeetle import (
    AMOUNT_MAX,
    Account,
    AccountBalance,
    AccountFilter,
    AccountFilterFlags,
    AccountFlags,
    CreateAccountResult,
    CreateAccountStatus,
    CreateTransferResult,
    CreateTransferStatus,
    IntegerOverflowError,
    QueryFilter,
    QueryFilterFlags,
    TooMuchDataError,
    Transfer,
    TransferFlags,
)

from sovr.ledger.types import (
    BATCH_EVENTS_MAX,
    CHANGE_EVENTS_LIMIT_MAX,
    ChangeEvent,
    ChangeEventType,
    InvalidLedgerUrlError,
    LedgerError,
    LedgerLockedError,
    LedgerUnavailableError,
)

__all__ = [
    "AMOUNT_MAX",
    "BATCH_EVENTS_MAX",
    "CHANGE_EVENTS_LIMIT_MAX",
    "Account",
    "AccountBalance",
    "AccountFilter",
    "AccountFilterFlags",
    "AccountFlags",
    "ChangeEvent",
    "ChangeEventType",
    "CreateAccountResult",
    "CreateAccountStatus",
    "CreateTransferResult",
    "CreateTransferStatus",
    "IntegerOverflowError",
    "InvalidLedgerUrlError",
    "Ledger",
    "LedgerError",
    "LedgerLockedError",
    "LedgerUnavailableError",
    "QueryFilter",
    "QueryFilterFlags",
    "TooMuchDataError",
    "Transfer",
    "TransferFlags",
    "connect",
    "default_url",
]


class Ledger(Protocol):
    """What every backend provides; mirrors `tigerbeetle.ClientSync`."""

    def create_accounts(self, accounts: list[Account]) -> list[CreateAccountResult]: ...
    def create_transfers(self, transfers: list[Transfer]) -> list[CreateTransferResult]: ...
    def lookup_accounts(self, accounts: list[int]) -> list[Account]: ...
    def lookup_transfers(self, transfers: list[int]) -> list[Transfer]: ...
    def get_account_transfers(self, filter: AccountFilter) -> list[Transfer]: ...
    def get_account_balances(self, filter: AccountFilter) -> list[AccountBalance]: ...
    def query_accounts(self, query_filter: QueryFilter) -> list[Account]: ...
    def query_transfers(self, query_filter: QueryFilter) -> list[Transfer]: ...
    def get_change_events(
        self, timestamp_min: int = 0, timestamp_max: int = 0, limit: int = CHANGE_EVENTS_LIMIT_MAX
    ) -> list[ChangeEvent]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Ledger: ...
    def __exit__(self, *exc_info: object) -> None: ...


def default_url() -> str:
    """The ledger URL from the environment: a TigerBeetle cluster if one is configured."""
    addresses = os.environ.get("TIGERBEETLE_ADDRESSES", "").strip()
    if addresses:
        cluster_id = os.environ.get("TIGERBEETLE_CLUSTER_ID", "0").strip() or "0"
        return f"tigerbeetle://{cluster_id}@{addresses}"
    data_dir = os.environ.get("SOVR_DATA_DIR", "data")
    return "embedded://" + os.path.join(os.path.abspath(data_dir), "ledger")


def connect(url: str | None = None, *, timeout_seconds: float = 10.0) -> Ledger:
    """Open the ledger that `url` names (default: `default_url()`)."""
    url = url or default_url()
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise InvalidLedgerUrlError(
            f"ledger url {url!r}: expected embedded://PATH, local://SOCKET or "
            "tigerbeetle://CLUSTER_ID@ADDRESSES"
        )
    if scheme == "embedded":
        from sovr.ledger.embedded import EmbeddedLedger

        return EmbeddedLedger(unquote(rest))
    if scheme == "local":
        from sovr.ledger.local_server import LocalLedgerClient

        return LocalLedgerClient(unquote(rest), timeout_seconds=timeout_seconds)
    if scheme == "tigerbeetle":
        from sovr.ledger.tigerbeetle_adapter import TigerBeetleLedger

        cluster_id, at, addresses = rest.rpartition("@")
        if not at or not cluster_id.isdigit() or not addresses:
            raise InvalidLedgerUrlError(
                f"ledger url {url!r}: expected tigerbeetle://CLUSTER_ID@ADDRESS[,ADDRESS...]"
            )
        return TigerBeetleLedger(int(cluster_id), addresses, timeout_seconds=timeout_seconds)
    raise InvalidLedgerUrlError(f"ledger url {url!r}: unknown scheme {scheme!r}")
