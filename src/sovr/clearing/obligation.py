"""A validated obligation and the legs it clears as.

An obligation debits one user and credits one purpose:

- no SKU: the purpose must be an honoring agent (STRIPE_SETTLEMENT, INSTACART_CLEARING,
  UTILITY_PROVIDERS); one leg.
- milk, eggs or bread: the purpose is that SKU's obligation account (give it, or leave it
  None); one leg. A SKU obligation account can be credited only this way, so no obligation
  can reach it without passing that SKU's limit.
- the bundle: one milk, one eggs and one bread together, cleared atomically as three legs
  (to the three SKU obligation accounts) in one linked chain. Its amount is split in
  proportion to the list prices 350 : 250 : 150 (the bundle lists at 750), by largest
  remainder, so a discounted bundle still charges each SKU its share. Purpose must be None.

Construction validates everything; a bad field raises `ObligationError` naming it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sovr.clearing import chart
from sovr.clearing.codes import Sku
from sovr.clearing.errors import ObligationError
from sovr.clearing.ids import UserKey, check_text, intent_transfer_id
from sovr.ledger import AMOUNT_MAX

PRICES_CENTS: dict[Sku, int] = {Sku.MILK: 350, Sku.EGGS: 250, Sku.BREAD: 150}
BUNDLE_SKUS: tuple[Sku, ...] = (Sku.MILK, Sku.EGGS, Sku.BREAD)
BUNDLE_PRICE_CENTS = 750
BUNDLE_AMOUNT_MIN_CENTS = len(BUNDLE_SKUS)  # at least one cent per leg
assert sum(PRICES_CENTS[s] for s in BUNDLE_SKUS) == BUNDLE_PRICE_CENTS
TIMEOUT_SECONDS_MAX = 30 * 24 * 3600  # a hold longer than 30 days is a mistake, not a hold


@dataclass(frozen=True, slots=True)
class Leg:
    """One transfer of an obligation: the user pays `amount_cents` to `credit_account_id`."""

    sku: Sku | None
    credit_account_id: int
    amount_cents: int


@dataclass(frozen=True, slots=True)
class Obligation:
    """A validated obligation: who asks (caller), which intent, who pays, how much, for what.

    `at` is the moment that decides the limit periods (UTC day and month). The Credit
    Terminal should pass its own clock at receipt, not a time the client claims, or a client
    could spend yesterday's unused limit.

    `timeout_seconds` > 0 makes it an authorization: every transfer of the chain is pending
    and expires after that many seconds unless captured or voided. `attestation_digest`, when
    given, is spent by the chain (an attestation clears one obligation, ever). `reference`
    is the caller's; it enters no transfer, only the `fingerprint`.
    """

    caller_id: str
    intent_id: str
    user: UserKey
    amount_cents: int
    purpose_account_id: int | None
    sku: Sku | None
    at: datetime
    reference: str = ""
    timeout_seconds: int = 0
    attestation_digest: bytes | None = None
    # The id of leg 0: what the Credit Terminal reports as the transfer id (derived once).
    obligation_id: int = field(init=False, repr=False, compare=False)
    # Everything the caller said, as one text (the narrative keeps it), and its 64-bit
    # `fingerprint` (leg 0's `user_data_64`): the same intent id with any other content
    # conflicts instead of passing as a duplicate. Made once: the chain and the narrative
    # both need them, for every intent a terminal clears.
    said: str = field(init=False, repr=False, compare=False)
    fingerprint: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_text("caller_id", self.caller_id)
        check_text("intent_id", self.intent_id)
        if not isinstance(self.user, UserKey):
            raise ObligationError("user", "must be a UserKey")
        _check_amount(self.amount_cents)
        if self.sku is not None and not isinstance(self.sku, Sku):
            raise ObligationError("sku", "must be a Sku or None")
        self._check_purpose()
        if not isinstance(self.at, datetime) or self.at.utcoffset() is None:
            raise ObligationError("at", "must be a timezone-aware datetime")
        if not isinstance(self.reference, str) or len(self.reference.encode()) > 256:
            raise ObligationError("reference", "must be text of at most 256 UTF-8 bytes")
        timeout = self.timeout_seconds
        if not isinstance(timeout, int) or isinstance(timeout, bool) or not (
            0 <= timeout <= TIMEOUT_SECONDS_MAX
        ):
            raise ObligationError("timeout_seconds", f"must be 0 to {TIMEOUT_SECONDS_MAX}")
        digest = self.attestation_digest
        if digest is not None and (not isinstance(digest, bytes) or len(digest) != 32):
            raise ObligationError("attestation_digest", "must be 32 bytes or None")
        object.__setattr__(self, "obligation_id",
                           intent_transfer_id(self.caller_id, self.intent_id, 0))
        said = "\x1f".join((
            "authorize" if timeout else "clear", self.user.canonical, str(self.amount_cents),
            str(self.purpose_account_id), str(int(self.sku or 0)), self.reference, str(timeout),
        ))
        object.__setattr__(self, "said", said)
        object.__setattr__(self, "fingerprint", fingerprint(said))

    def _check_purpose(self) -> None:
        purpose = self.purpose_account_id
        if self.sku is None:
            if purpose not in chart.PURPOSE_ACCOUNTS:
                names = ", ".join(chart.BY_ID[i].name for i in sorted(chart.PURPOSE_ACCOUNTS))
                raise ObligationError("purpose_account_id", f"must be one of {names}")
        elif self.sku == Sku.BUNDLE:
            if purpose is not None:
                raise ObligationError("purpose_account_id", "must be None for a bundle")
            if self.amount_cents < BUNDLE_AMOUNT_MIN_CENTS:
                raise ObligationError(
                    "amount_cents", f"a bundle must be at least {BUNDLE_AMOUNT_MIN_CENTS} cents"
                )
        elif purpose not in (None, chart.SKU_ACCOUNTS[self.sku]):
            raise ObligationError(
                "purpose_account_id", f"must be None or {self.sku.name}'s obligation account"
            )

    @property
    def at_utc(self) -> datetime:
        return self.at.astimezone(UTC)


    def legs(self) -> tuple[Leg, ...]:
        if self.sku is None:
            assert self.purpose_account_id is not None
            return (Leg(None, self.purpose_account_id, self.amount_cents),)
        if self.sku == Sku.BUNDLE:
            shares = split_bundle(self.amount_cents)
            return tuple(Leg(s, chart.SKU_ACCOUNTS[s], shares[s]) for s in BUNDLE_SKUS)
        return (Leg(self.sku, chart.SKU_ACCOUNTS[self.sku], self.amount_cents),)


def fingerprint(said: str) -> int:
    """64 bits of a hash of what a caller said about an intent (a transfer's user_data_64)."""
    return int.from_bytes(hashlib.blake2b(said.encode("utf-8"), digest_size=8).digest(), "big")


def _check_amount(amount_cents: object) -> None:
    if not isinstance(amount_cents, int) or isinstance(amount_cents, bool):
        raise ObligationError("amount_cents", "must be an integer number of cents")
    if not 1 <= amount_cents <= AMOUNT_MAX:
        raise ObligationError("amount_cents", "must be at least 1 and at most 2**128 - 1")


def split_bundle(amount_cents: int) -> dict[Sku, int]:
    """Split a bundle's amount over its SKUs in proportion to their list prices.

    Largest remainder: each SKU gets the floor of its exact share, and the cents left over go
    one each to the largest fractional parts (ties in milk, eggs, bread order).
    """
    assert amount_cents >= BUNDLE_AMOUNT_MIN_CENTS
    exact = {s: amount_cents * PRICES_CENTS[s] for s in BUNDLE_SKUS}  # in 1/750 cents
    shares = {s: exact[s] // BUNDLE_PRICE_CENTS for s in BUNDLE_SKUS}
    left_over = amount_cents - sum(shares.values())
    by_remainder = sorted(BUNDLE_SKUS, key=lambda s: -(exact[s] % BUNDLE_PRICE_CENTS))
    for sku in by_remainder[:left_over]:
        shares[sku] += 1
    assert sum(shares.values()) == amount_cents and all(v >= 1 for v in shares.values())
    return shares
