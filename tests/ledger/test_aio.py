"""The asyncio flavour of the ledger boundary."""

from __future__ import annotations

import asyncio

import tigerbeetle as tb

from sovr.ledger.aio import AsyncLedger


def test_concurrent_coroutines_share_one_ledger(tmp_path):
    async def scenario() -> tuple[list[tb.Account], int]:
        async with AsyncLedger.connect("embedded://" + str(tmp_path / "ledger")) as ledger:
            results = await ledger.create_accounts(
                [tb.Account(id=1, ledger=1, code=1), tb.Account(id=2, ledger=1, code=1)]
            )
            assert [r.status for r in results] == [tb.CreateAccountStatus.CREATED] * 2

            async def pay(n: int) -> tb.CreateTransferResult:
                [result] = await ledger.create_transfers(
                    [tb.Transfer(id=1000 + n, debit_account_id=1, credit_account_id=2,
                                 amount=n, ledger=1, code=1)]
                )
                return result

            paid = await asyncio.gather(*(pay(n) for n in range(1, 41)))
            assert all(r.status == tb.CreateTransferStatus.CREATED for r in paid)
            events = await ledger.get_change_events()
            return await ledger.lookup_accounts([1, 2]), len(events)

    accounts, event_count = asyncio.run(scenario())
    assert [a.debits_posted for a in accounts] == [sum(range(1, 41)), 0]
    assert [a.credits_posted for a in accounts] == [0, sum(range(1, 41))]
    assert event_count == 40
