"""Properties: every valid intent round-trips, and any single-field change breaks verification.

A change on the terminal's side (the intent being cleared differs from the signed one) is
`attestation_mismatch` naming exactly that field; the same change made to the signed copy
inside the attestation is `attestation_signer_not_allowed` (the signature no longer
recovers to the attestor); flipping any bit of the signature never verifies.
"""

from __future__ import annotations

import dataclasses

from attestor_helpers import ATTESTOR_KEY, NOW_SECONDS
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovr.attestor import (
    AMOUNT_MAX_CENTS,
    AttestationError,
    Attestor,
    CheckoutIntent,
    InMemoryReplayGuard,
    verify,
)
from sovr.attestor.typed_data import WIRE_TO_ATTRIBUTE, checksum_address

ATTESTOR = Attestor(ATTESTOR_KEY)
ATTRIBUTE_TO_WIRE = {attr: wire for wire, attr in WIRE_TO_ATTRIBUTE.items()}

_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=40,
)
_wallets = st.binary(min_size=20, max_size=20).filter(any).map(lambda b: "0x" + b.hex())
_amounts = st.integers(min_value=1, max_value=AMOUNT_MAX_CENTS)
_timestamps = st.integers(min_value=NOW_SECONDS - 3600, max_value=NOW_SECONDS + 30)

FIELD_STRATEGIES = {
    "request_id": _text,
    "wallet": _wallets,
    "amount_cents": _amounts,
    "merchant_id": _text,
    "timestamp_seconds": _timestamps,
    "reference": _text,
}

intents = st.builds(CheckoutIntent, **FIELD_STRATEGIES)


def _verify(intent: CheckoutIntent, attestation: object):
    return verify(
        intent,
        attestation,  # type: ignore[arg-type]
        allowed_signers=[ATTESTOR.address],
        now_seconds=NOW_SECONDS,
        replay_guard=InMemoryReplayGuard(),
    )


@settings(max_examples=60, deadline=None)
@given(intents)
def test_every_valid_intent_round_trips(intent: CheckoutIntent) -> None:
    attestation = ATTESTOR.sign(intent)
    assert _verify(intent, attestation).intent == intent
    assert _verify(intent, attestation.to_dict()).digest == intent.digest()


@st.composite
def single_field_changes(draw: st.DrawFn) -> tuple[CheckoutIntent, CheckoutIntent, str]:
    intent = draw(intents)
    attribute = draw(st.sampled_from(sorted(FIELD_STRATEGIES)))
    original = getattr(intent, attribute)
    value = draw(
        FIELD_STRATEGIES[attribute].filter(
            lambda v: (v.lower() if attribute == "wallet" else v)
            != (original.lower() if attribute == "wallet" else original)
        )
    )
    return intent, dataclasses.replace(intent, **{attribute: value}), ATTRIBUTE_TO_WIRE[attribute]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(single_field_changes())
def test_any_single_field_change_to_the_intent_is_a_mismatch_naming_it(
    change: tuple[CheckoutIntent, CheckoutIntent, str],
) -> None:
    signed, cleared, field = change
    attestation = ATTESTOR.sign(signed)
    try:
        _verify(cleared, attestation)
    except AttestationError as e:
        assert e.code == "attestation_mismatch"
        assert e.fields == (field,)  # type: ignore[attr-defined]
    else:
        raise AssertionError(f"changing {field} still verified")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(single_field_changes())
def test_any_single_field_change_to_the_signed_copy_breaks_the_signature(
    change: tuple[CheckoutIntent, CheckoutIntent, str],
) -> None:
    signed, altered, _ = change
    forged = dataclasses.replace(ATTESTOR.sign(signed), intent=altered)
    try:
        _verify(altered, forged)
    except AttestationError as e:
        assert e.code in ("attestation_signer_not_allowed", "attestation_malformed")
    else:
        raise AssertionError("an altered payload still verified")


@settings(max_examples=120, deadline=None)
@given(intents, st.integers(min_value=0, max_value=65 * 8 - 1))
def test_any_bit_flip_in_the_signature_breaks_it(intent: CheckoutIntent, bit: int) -> None:
    signature = bytearray(ATTESTOR.sign(intent).signature)
    signature[bit // 8] ^= 1 << (bit % 8)
    wire = {**ATTESTOR.sign(intent).to_dict(), "signature": "0x" + signature.hex()}
    try:
        _verify(intent, wire)
    except AttestationError as e:
        assert e.code in ("attestation_signer_not_allowed", "attestation_malformed")
    else:
        raise AssertionError(f"flipping bit {bit} still verified")


@settings(max_examples=300, deadline=None)
@given(
    request_id=_text, wallet=_wallets, amount=_amounts, merchant_id=_text,
    timestamp=_timestamps, reference=_text,
)
def test_fast_digest_equals_eth_accounts_eip712_encoding(
    request_id: str, wallet: str, amount: int, merchant_id: str, timestamp: int, reference: str
) -> None:
    """`CheckoutIntent.digest` is hand-encoded for speed; eth-account is the reference."""
    intent = CheckoutIntent(request_id, wallet, amount, merchant_id, timestamp, reference)
    signable = intent.signable()
    assert intent.digest() == keccak(b"\x19" + signable.version + signable.header + signable.body)


@settings(max_examples=300, deadline=None)
@given(address=st.binary(min_size=20, max_size=20))
def test_fast_checksum_equals_eth_utils(address: bytes) -> None:
    text = "0x" + address.hex()
    assert checksum_address(text) == to_checksum_address(text)
    assert checksum_address(text.upper().replace("0X", "0x")) == to_checksum_address(text)


@settings(max_examples=100, deadline=None)
@given(intent=intents)
def test_fast_signature_equals_eth_accounts(intent: CheckoutIntent) -> None:
    """`Attestor.sign` uses libsecp256k1 directly; eth-account's signature is the reference."""
    from eth_account import Account

    expected = Account.sign_message(intent.signable(), ATTESTOR_KEY).signature
    assert ATTESTOR.sign(intent).signature == bytes(expected)
