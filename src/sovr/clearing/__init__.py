"""The clearing core: obligations in, ledger transfers out, limits enforced by the ledger.

Pure Python over the ledger boundary (`sovr.ledger`); no web, no database. The Credit
Terminal validates and authenticates an intent, builds an `Obligation`, and calls
`Clearer.clear`. Modules:

- `codes`: the one table of ledger numbers, account codes, transfer codes, SKUs, limit kinds
  and reject reasons;
- `chart`: the named accounts and `ensure_chart`;
- `ids`: deterministic ids (users, limit accounts, transfers) shared by every terminal;
- `obligation`: a validated obligation and its legs (the bundle's split);
- `limits`: limits as ledger accounts (the balance-bounds recipe);
- `clear`: `Clearer`, `clear_obligation`, `fund` and their results.
"""

from sovr.clearing.chart import ensure_chart
from sovr.clearing.clear import (
    Cleared,
    Clearer,
    ClearingResult,
    Rejected,
    clear_obligation,
    fund,
)
from sovr.clearing.codes import (
    AccountCode,
    IdentityKind,
    LedgerId,
    LimitKind,
    RejectReason,
    Sku,
    TransferCode,
)
from sovr.clearing.errors import AccountSetupError, ClearingError, ObligationError
from sovr.clearing.ids import UserKey
from sovr.clearing.limits import DEFAULT_LIMITS, Limits
from sovr.clearing.obligation import Obligation

__all__ = [
    "DEFAULT_LIMITS",
    "AccountCode",
    "AccountSetupError",
    "Cleared",
    "Clearer",
    "ClearingError",
    "ClearingResult",
    "IdentityKind",
    "LedgerId",
    "LimitKind",
    "Limits",
    "Obligation",
    "ObligationError",
    "Rejected",
    "RejectReason",
    "Sku",
    "TransferCode",
    "UserKey",
    "clear_obligation",
    "ensure_chart",
    "fund",
]
