"""The one table of codes sovr writes into the ledger.

TigerBeetle gives every account and transfer a `ledger` (u32), a `code` (u16) and three
`user_data` fields. sovr uses them as below; nothing else in sovr invents a code.

Ledgers (`LedgerId`)
--------------------

| ledger | name       | unit                       | holds                                |
|-------:|------------|----------------------------|--------------------------------------|
|      1 | USD        | US cents                   | money: every named account and user  |
|   1001 | USD_LIMITS | US cents of limit headroom | limit accounts, LIMIT_SOURCE/CONSUMED|

Limits live on their own ledger so that no bug can ever move money into or out of a limit
account (TigerBeetle refuses a transfer between accounts of different ledgers), and so that
the sums over ledger 1 are money and nothing else. One linked chain may mix both ledgers.

Account codes (`AccountCode`): what kind of account it is
---------------------------------------------------------

| code | name               | examples / id                         | flags                    |
|-----:|--------------------|---------------------------------------|--------------------------|
|    1 | SYSTEM             | SYSTEM_RESERVE, CASH_ODFI, ACH_...    | history                  |
|    2 | USER_OBLIGATION    | one per user, derived id              | debits<=credits, history |
|    3 | HONORING_AGENT     | STRIPE_SETTLEMENT, INSTACART_..., ... | history                  |
|    4 | SKU_OBLIGATION     | MILK/EGGS/BREAD_OBLIGATION            | debits<=credits, history |
|    5 | MIRROR             | NARRATIVE_MIRROR, AUDIT_TRAIL         | debits<=credits, history |
|    6 | LIMIT_CONTROL      | LIMIT_SOURCE, LIMIT_CONSUMED          | CONSUMED: debits<=credits|
|   21 | LIMIT_USER_DAILY   | per user per UTC day, derived id      | debits<=credits          |
|   22 | LIMIT_USER_MONTHLY | per user per UTC month, derived id    | debits<=credits          |
|   23 | LIMIT_SKU_DAILY    | per user per SKU per UTC day          | debits<=credits          |
|   24 | LIMIT_BUNDLE_DAILY | per user per UTC day, all essentials  | debits<=credits          |

The named accounts' codes are the leading digit of their seed 003 ids (1000001 -> 1, ...).

Transfer codes (`TransferCode`): what kind of transaction it is
---------------------------------------------------------------

| code | name                | debit -> credit                             | ledger     |
|-----:|---------------------|---------------------------------------------|------------|
|    1 | OBLIGATION_CLEARING | user -> purpose (honoring agent or SKU)     | USD        |
|    2 | DEPOSIT             | funding source (system/agent) -> user       | USD        |
|    3 | WITHDRAWAL          | user -> funding source                      | USD        |
|    4 | SETTLEMENT          | SKU obligation -> honoring agent            | USD        |
|    5 | CORRECTION          | any -> any, a new forward transfer          | USD        |
|   11 | LIMIT_FUNDING       | LIMIT_SOURCE -> limit account               | USD_LIMITS |
|   12 | LIMIT_CHARGE        | limit account -> LIMIT_CONSUMED             | USD_LIMITS |
|   13 | LIMIT_ADJUSTMENT    | either way, an operator's mid-period change | USD_LIMITS |
|   15 | INTENT_TOMBSTONE    | INTENT_TOMBSTONE -> LIMIT_CONSUMED, 1; fails| USD_LIMITS |

Code 1 for obligation clearing is the seeds' own choice.

user_data fields
----------------

| object              | user_data_128           | user_data_64                | user_data_32 |
|---------------------|-------------------------|-----------------------------|--------------|
| user account        | its own id              | 0                           | IdentityKind |
| limit account       | the user account id     | period (20261122 or 202611) | Sku or 0     |
| obligation transfer | obligation id (leg 0's) | intent fingerprint          | Sku or 0     |
| limit charge        | obligation id           | period                      | Sku or 0     |
| capture / void      | obligation id           | 0                           | Sku or 0     |
| limit funding       | the user account id     | period                      | Sku or 0     |
| deposit             | 0                       | 0                           | 0            |

So `query_accounts(user_data_128=U)` finds user U's account and all its limit accounts, and
`query_transfers(user_data_128=O)` finds obligation O's legs, limit charges and captures or
voids. (An attested obligation's user-monthly charge takes its id from the attestation's
digest, `ids.attestation_use_id`: see `sovr.clearing.clear`.)

The intent fingerprint (`Obligation.fingerprint`) is 64 bits of a hash of everything the
caller said about the intent, so the same intent id sent again with other content (even a
reference, which no transfer field holds) meets `exists_with_different_user_data_64`: a
conflict, never a silent duplicate.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class LedgerId(IntEnum):
    """TigerBeetle `ledger` numbers (u32): one unit of account each."""

    USD = 1
    USD_LIMITS = 1001


class AccountCode(IntEnum):
    """TigerBeetle account `code` (u16): the account's type."""

    SYSTEM = 1
    USER_OBLIGATION = 2
    HONORING_AGENT = 3
    SKU_OBLIGATION = 4
    MIRROR = 5
    LIMIT_CONTROL = 6
    LIMIT_USER_DAILY = 21
    LIMIT_USER_MONTHLY = 22
    LIMIT_SKU_DAILY = 23
    LIMIT_BUNDLE_DAILY = 24


class TransferCode(IntEnum):
    """TigerBeetle transfer `code` (u16): the transaction's kind."""

    OBLIGATION_CLEARING = 1
    DEPOSIT = 2
    WITHDRAWAL = 3
    SETTLEMENT = 4
    CORRECTION = 5
    LIMIT_FUNDING = 11
    LIMIT_CHARGE = 12
    LIMIT_ADJUSTMENT = 13
    INTENT_TOMBSTONE = 15


class Sku(IntEnum):
    """The three SKUs that matter, and their bundle (stored in `user_data_32`)."""

    MILK = 1
    EGGS = 2
    BREAD = 3
    BUNDLE = 4  # one milk + one eggs + one bread; cleared as three legs


class LimitKind(IntEnum):
    """Which limit a limit account bounds; its value is the limit account's `code`."""

    USER_DAILY = AccountCode.LIMIT_USER_DAILY
    USER_MONTHLY = AccountCode.LIMIT_USER_MONTHLY
    SKU_DAILY = AccountCode.LIMIT_SKU_DAILY
    BUNDLE_DAILY = AccountCode.LIMIT_BUNDLE_DAILY


class IdentityKind(IntEnum):
    """How a user is identified (the user account's `user_data_32`)."""

    WALLET = 1
    USER_ID = 2


class RejectReason(StrEnum):
    """Stable reason codes of a rejected obligation (what the Credit Terminal returns)."""

    SINGLE_TRANSFER_LIMIT_EXCEEDED = "single_transfer_limit_exceeded"
    DAILY_LIMIT_EXCEEDED = "daily_limit_exceeded"
    MONTHLY_LIMIT_EXCEEDED = "monthly_limit_exceeded"
    SKU_DAILY_LIMIT_EXCEEDED = "sku_daily_limit_exceeded"
    BUNDLE_LIMIT_EXCEEDED = "bundle_limit_exceeded"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    # The attestation already vouched for another obligation (another caller or intent).
    ATTESTATION_REPLAYED = "attestation_replayed"
    # The same caller and intent id were already used for a different obligation.
    INTENT_CONFLICT = "intent_conflict"
    # This intent id was rejected before; rejections are final (the original reason is in
    # the rejection log).
    INTENT_PREVIOUSLY_REJECTED = "intent_previously_rejected"
    # Anything else the ledger refused (a missing account, a misconfiguration): see the
    # raw status. Never expected in operation.
    LEDGER_REFUSED = "ledger_refused"


LIMIT_REASONS: dict[LimitKind, RejectReason] = {
    LimitKind.USER_DAILY: RejectReason.DAILY_LIMIT_EXCEEDED,
    LimitKind.USER_MONTHLY: RejectReason.MONTHLY_LIMIT_EXCEEDED,
    LimitKind.SKU_DAILY: RejectReason.SKU_DAILY_LIMIT_EXCEEDED,
    LimitKind.BUNDLE_DAILY: RejectReason.BUNDLE_LIMIT_EXCEEDED,
}
