"""The Credit Terminal's request and response bodies (Pydantic; they make the OpenAPI doc).

Money is integer cents (`amount_cents`), never a float or a string. Transfer ids and ledger
timestamps are 128- and 64-bit integers, so they travel as decimal strings (JavaScript
numbers lose precision past 2**53).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sovr.clearing import chart
from sovr.clearing.codes import Sku
from sovr.clearing.obligation import TIMEOUT_SECONDS_MAX

AMOUNT_MAX = 2**128 - 1
INTENT_ID_PATTERN = r"^[\x21-\x7e]+$"
BATCH_INTENTS_MAX = 8189

# purpose (as the caller writes it, and as the attestation's merchantId) -> (SKU, account)
PURPOSES: dict[str, tuple[Sku | None, int | None]] = {
    "milk": (Sku.MILK, None),
    "eggs": (Sku.EGGS, None),
    "bread": (Sku.BREAD, None),
    "bundle": (Sku.BUNDLE, None),
    **{chart.BY_ID[a].name: (None, a) for a in sorted(chart.PURPOSE_ACCOUNTS)},
}
Purpose = Literal[
    "milk", "eggs", "bread", "bundle", "STRIPE_SETTLEMENT", "INSTACART_CLEARING",
    "UTILITY_PROVIDERS",
]
assert set(Purpose.__args__) == set(PURPOSES)  # type: ignore[attr-defined]
FundingSource = Literal[
    "SYSTEM_RESERVE", "CASH_ODFI", "ACH_CLEARING_LLC", "STRIPE_SETTLEMENT",
    "INSTACART_CLEARING", "UTILITY_PROVIDERS",
]
assert {chart.BY_NAME[n].id for n in FundingSource.__args__} == chart.FUNDING_SOURCES  # type: ignore[attr-defined]

ATTESTATION_DOC = {
    "type": "object",
    "description": "The attestor's EIP-712 attestation of this intent, as `POST "
    "/v1/attestations` returns it: {signer, signature, payload}. Its payload must equal the "
    "intent: requestId = intent_id, wallet, amount = amount_cents, merchantId = purpose, "
    "reference.",
    "properties": {
        "signer": {"type": "string", "example": "0x…"},
        "signature": {"type": "string", "description": "0x + 130 hex digits (r‖s‖v)"},
        "payload": {"type": "object", "description": "the signed CheckoutIntent"},
    },
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class IntentIn(_Strict):
    """An obligation intent: the user (by wallet) owes `amount_cents` for `purpose`."""

    intent_id: str = Field(min_length=1, max_length=256, pattern=INTENT_ID_PATTERN,
                           description="Your id for this intent; a retry reuses it.")
    wallet: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$",
                        description="The payer's Ethereum address (signed by the attestor).")
    user_id: str | None = Field(
        None, description="Optional. The account is the wallet's; a user id that is an "
        "address must be that wallet.")
    purpose: Purpose = Field(description="A SKU, the bundle or an honoring agent.")
    amount_cents: int = Field(ge=1, le=AMOUNT_MAX)
    reference: str = Field(min_length=1, max_length=256, description="Order id, invoice, …")
    attestation: dict[str, Any] | None = Field(None, json_schema_extra=ATTESTATION_DOC)


class AuthorizationIn(IntentIn):
    """An intent held (pending) until captured, voided or expired."""

    timeout_seconds: int = Field(ge=1, le=TIMEOUT_SECONDS_MAX,
                                 description="The hold expires after this many seconds.")


class BatchIn(_Strict):
    intents: list[IntentIn] = Field(min_length=1, max_length=BATCH_INTENTS_MAX)


class CaptureIn(_Strict):
    amount_cents: int | None = Field(
        None, ge=1, le=AMOUNT_MAX, description="Capture this much (default: all of it).")


class FundingIn(_Strict):
    funding_id: str = Field(min_length=1, max_length=256, pattern=INTENT_ID_PATTERN,
                            description="Your id for this funding; a retry reuses it.")
    wallet: str | None = Field(None, pattern=r"^0x[0-9a-fA-F]{40}$")
    user_id: str | None = None
    source: FundingSource = Field(description="The named account the money comes from.")
    amount_cents: int = Field(ge=1, le=AMOUNT_MAX)
    reference: str | None = Field(None, max_length=256)


class Outcome(BaseModel):
    """What happened to one intent (or funding, capture, void)."""

    intent_id: str | None = None
    status: Literal["cleared", "authorized", "captured", "voided", "expired", "funded",
                    "rejected", "conflict", "invalid"]
    duplicate: bool = Field(False, description="True: this repeats an earlier request; "
                            "nothing new happened and this is the original outcome.")
    transfer_id: str | None = Field(None, description="Leg 0's ledger id (decimal u128).")
    authorization_id: str | None = None
    timestamp: str | None = Field(None, description="Ledger timestamp, ns (decimal u64).")
    amount_cents: int | None = None
    code: str | None = Field(None, description="Why it was refused (stable).")
    message: str | None = None
    field: str | None = None


class BatchOut(BaseModel):
    results: list[Outcome]
    counts: dict[str, int]


class Balance(BaseModel):
    """A user's balance. `available_cents` is what can be spent now."""

    user: str
    account_id: str
    available_cents: int = Field(description="posted credits - posted debits - held debits")
    pending_cents: int = Field(description="pending credits - pending debits (holds < 0)")
    posted_cents: int = Field(description="posted credits - posted debits")
    total_cents: int = Field(description="posted_cents + pending_cents")
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int


class TransferOut(BaseModel):
    id: str
    timestamp: str
    debit_account: str
    credit_account: str
    amount_cents: int
    kind: str
    pending: bool
    direction: Literal["debit", "credit"]


class History(BaseModel):
    user: str
    transfers: list[TransferOut]
    next_before: str | None = Field(None, description="Pass as `before` for older entries.")
