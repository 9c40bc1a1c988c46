"""The ledger boundary for asyncio services: `await ledger.create_transfers(...)`.

`AsyncLedger` wraps any backend `connect()` returns and runs each call on a small thread
pool, so a slow fsync or a cluster round trip never blocks the event loop. Both backends
release the GIL while they wait (SQLite's fsync, the TigerBeetle client's network I/O), so
the loop keeps serving requests meanwhile. The embedded engine serializes calls itself;
TigerBeetle's client batches concurrent ones.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import tigerbeetle as tb

from sovr.ledger import CHANGE_EVENTS_LIMIT_MAX, ChangeEvent, Ledger, connect

T = TypeVar("T")


class AsyncLedger:
    """The same operations as `Ledger`, as coroutines."""

    def __init__(self, ledger: Ledger, *, threads: int = 4) -> None:
        self.ledger = ledger
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sovr-ledger")

    @classmethod
    def connect(cls, url: str | None = None, **kwargs: Any) -> AsyncLedger:
        return cls(connect(url, **kwargs))

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    async def create_accounts(self, accounts: list[tb.Account]) -> list[tb.CreateAccountResult]:
        return await self._run(self.ledger.create_accounts, accounts)

    async def create_transfers(
        self, transfers: list[tb.Transfer]
    ) -> list[tb.CreateTransferResult]:
        return await self._run(self.ledger.create_transfers, transfers)

    async def lookup_accounts(self, accounts: list[int]) -> list[tb.Account]:
        return await self._run(self.ledger.lookup_accounts, accounts)

    async def lookup_transfers(self, transfers: list[int]) -> list[tb.Transfer]:
        return await self._run(self.ledger.lookup_transfers, transfers)

    async def get_account_transfers(self, filter: tb.AccountFilter) -> list[tb.Transfer]:  # noqa: A002
        return await self._run(self.ledger.get_account_transfers, filter)

    async def get_account_balances(self, filter: tb.AccountFilter) -> list[tb.AccountBalance]:  # noqa: A002
        return await self._run(self.ledger.get_account_balances, filter)

    async def query_accounts(self, query_filter: tb.QueryFilter) -> list[tb.Account]:
        return await self._run(self.ledger.query_accounts, query_filter)

    async def query_transfers(self, query_filter: tb.QueryFilter) -> list[tb.Transfer]:
        return await self._run(self.ledger.query_transfers, query_filter)

    async def get_change_events(
        self,
        timestamp_min: int = 0,
        timestamp_max: int = 0,
        limit: int = CHANGE_EVENTS_LIMIT_MAX,
    ) -> list[ChangeEvent]:
        return await self._run(
            self.ledger.get_change_events, timestamp_min, timestamp_max, limit
        )

    async def close(self) -> None:
        await self._run(self.ledger.close)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> AsyncLedger:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
