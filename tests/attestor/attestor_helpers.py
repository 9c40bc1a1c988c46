"""Constants and builders shared by the Attestor tests (imported as `attestor_helpers`)."""

from __future__ import annotations

from sovr.attestor import CheckoutIntent

# eth-account's documentation key (address 0x2c7536E3605D9C16a7a3D7b1898e529396a65c23).
ATTESTOR_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
OTHER_KEY = "0x" + "22" * 32
NOW_SECONDS = 1_767_225_600  # 2026-01-01T00:00:00Z
WALLET = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"
OTHER_WALLET = "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"


def make_intent(**changes: object) -> CheckoutIntent:
    fields: dict[str, object] = {
        "request_id": "req-0001",
        "wallet": WALLET,
        "amount_cents": 750,
        "merchant_id": "studio-demo",
        "timestamp_seconds": NOW_SECONDS,
        "reference": "order-123",
    }
    fields.update(changes)
    return CheckoutIntent(**fields)  # type: ignore[arg-type]
