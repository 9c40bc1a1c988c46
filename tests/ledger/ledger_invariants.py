"""The ledger-wide invariants every test that drives random work checks after it."""

from __future__ import annotations

from collections.abc import Iterable

import tigerbeetle as tb

AF = tb.AccountFlags


def assert_ledger_invariants(accounts: list[tb.Account], ledgers: Iterable[int]) -> None:
    """Per ledger, debits equal credits (posted and pending); no account breaks its bound."""
    for ledger_id in ledgers:
        on = [a for a in accounts if a.ledger == ledger_id]
        assert sum(a.debits_posted for a in on) == sum(a.credits_posted for a in on)
        assert sum(a.debits_pending for a in on) == sum(a.credits_pending for a in on)
    for a in accounts:
        if a.flags & AF.DEBITS_MUST_NOT_EXCEED_CREDITS:
            assert a.debits_pending + a.debits_posted <= a.credits_posted, a
        if a.flags & AF.CREDITS_MUST_NOT_EXCEED_DEBITS:
            assert a.credits_pending + a.credits_posted <= a.debits_posted, a
