"""Errors of the clearing core. A *rejection* is not an error: it is a `Rejected` result."""

from __future__ import annotations


class ClearingError(Exception):
    """Something sovr itself got wrong or the ledger is misconfigured; never a user's fault."""


class AccountSetupError(ClearingError):
    """An account could not be created as sovr defines it (e.g. it exists with other flags)."""

    def __init__(self, name: str, account_id: int, status: object) -> None:
        self.name = name
        self.account_id = account_id
        self.status = status
        super().__init__(f"account {name} ({account_id}): ledger answered {status}")


class ObligationError(ValueError):
    """Bad input to the clearing core: names the field and the rule it breaks."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")
