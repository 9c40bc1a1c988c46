"""verify(): the round trip, and every refusal with its stable code."""

from __future__ import annotations

import dataclasses
import json

import pytest
from attestor_helpers import NOW_SECONDS, OTHER_WALLET, make_intent

from sovr.attestor import (
    DEFAULT_MAX_AGE_SECONDS,
    DEFAULT_MAX_FUTURE_SKEW_SECONDS,
    REPLAY_CHECKED_BY_LEDGER,
    Attestation,
    AttestationError,
    AttestationExpired,
    AttestationFromFuture,
    AttestationMalformed,
    AttestationMismatch,
    AttestationMissing,
    AttestationReplayed,
    AttestationSignerNotAllowed,
    Attestor,
    CheckoutIntent,
    InMemoryReplayGuard,
    Recovery,
    verify,
)
from sovr.attestor.keys import SECP256K1_ORDER
from sovr.attestor.recovery import SignerRecovery


def check(
    intent: CheckoutIntent,
    attestation: object,
    allowed: object,
    *,
    now_seconds: float = NOW_SECONDS,
    guard: object = None,
    **settings: int,
):
    return verify(
        intent,
        attestation,  # type: ignore[arg-type]
        allowed_signers=allowed,  # type: ignore[arg-type]
        now_seconds=now_seconds,
        replay_guard=guard if guard is not None else InMemoryReplayGuard(),  # type: ignore[arg-type]
        **settings,
    )


def refusal(*args: object, **kwargs: object) -> AttestationError:
    with pytest.raises(AttestationError) as e:
        check(*args, **kwargs)  # type: ignore[arg-type]
    return e.value


# --- acceptance -------------------------------------------------------------------------


def test_round_trip_object_and_json(attestor: Attestor, intent: CheckoutIntent) -> None:
    attestation = attestor.sign(intent)
    verified = check(intent, attestation, [attestor.address])
    assert verified.intent == intent
    assert verified.signer == attestor.address
    assert verified.digest == intent.digest()
    assert verified.digest_hex == "0x" + intent.digest().hex()
    assert verified.digest_u128 == int.from_bytes(intent.digest()[:16], "big")
    assert verified.digest_u128 < 2**128
    assert verified.age_seconds == 0

    wire = json.loads(json.dumps(attestation.to_dict()))
    assert Attestation.from_dict(wire) == attestation
    assert check(intent, wire, [attestor.address]).digest == verified.digest


def test_allowed_signers_are_compared_case_insensitively(
    attestor: Attestor, intent: CheckoutIntent
) -> None:
    attestation = attestor.sign(intent)
    check(intent, attestation, {attestor.address.lower()})
    check(intent, attestation, ("0x" + attestor.address[2:].upper(),))


def test_one_of_several_allowed_attestors(
    attestor: Attestor, other_attestor: Attestor, intent: CheckoutIntent
) -> None:
    allowed = [attestor.address, other_attestor.address]
    assert check(intent, other_attestor.sign(intent), allowed).signer == other_attestor.address


def test_age_bounds_are_inclusive(attestor: Attestor) -> None:
    intent = make_intent()
    attestation = attestor.sign(intent)
    allowed = [attestor.address]
    oldest = check(intent, attestation, allowed, now_seconds=NOW_SECONDS + 3600)
    assert oldest.age_seconds == DEFAULT_MAX_AGE_SECONDS
    newest = check(intent, attestation, allowed, now_seconds=NOW_SECONDS - 30)
    assert newest.age_seconds == -DEFAULT_MAX_FUTURE_SKEW_SECONDS
    check(intent, attestation, allowed, now_seconds=NOW_SECONDS + 59.5, max_age_seconds=60)


# --- missing / malformed -----------------------------------------------------------------


@pytest.mark.parametrize("missing", [None, {}])
def test_missing(attestor: Attestor, intent: CheckoutIntent, missing: object) -> None:
    e = refusal(intent, missing, [attestor.address])
    assert isinstance(e, AttestationMissing)
    assert e.code == "attestation_missing"
    assert e.to_dict()["code"] == "attestation_missing"


def _wire(attestor: Attestor, intent: CheckoutIntent, **changes: object) -> dict:
    wire = attestor.sign(intent).to_dict()
    wire.update(changes)
    return wire


@pytest.mark.parametrize(
    ("mutate", "field", "text"),
    [
        (lambda w: w.update(signature=w["signature"][:-2]), "signature", "130 hex digits"),
        (lambda w: w.update(signature=w["signature"] + "00"), "signature", "130 hex digits"),
        (lambda w: w.update(signature=w["signature"][2:]), "signature", "130 hex digits"),
        (lambda w: w.update(signature="0x" + "zz" * 65), "signature", "not a hex digit"),
        (lambda w: w.update(signature=list(range(65))), "signature", "hex string"),
        (lambda w: w.update(signature=w["signature"][:-2] + "1d"), "signature", "v must be"),
        (lambda w: w.update(signature=w["signature"][:-2] + "00"), "signature", "v must be"),
        (lambda w: w.update(signature="0x" + "00" * 64 + "1b"), "signature", "r is out"),
        (lambda w: w.update(signer="0x1234"), "signer", "40 hex digits"),
        (lambda w: w.update(signer=None), "signer", "must be a string"),
        (lambda w: w.pop("signature"), "signature", "is required"),
        (lambda w: w.pop("payload"), "payload", "is required"),
        (lambda w: w.update(expiresAt=1), "expiresAt", "unknown field"),
        (lambda w: w["payload"].update(amount=7.5), "payload.amount", "float"),
        (lambda w: w["payload"].update(amount=-750), "payload.amount", "at least 1"),
        (lambda w: w["payload"].update(amount=2**128), "payload.amount", "2**128-1"),
        (lambda w: w["payload"].pop("wallet"), "payload.wallet", "is required"),
        (lambda w: w.update(payload="req-0001"), "payload", "must be an object"),
    ],
)
def test_malformed(
    attestor: Attestor, intent: CheckoutIntent, mutate, field: str, text: str
) -> None:
    wire = _wire(attestor, intent)
    mutate(wire)
    e = refusal(intent, wire, [attestor.address])
    assert isinstance(e, AttestationMalformed), e
    assert e.code == "attestation_malformed"
    assert e.field == field
    assert text in e.message


@pytest.mark.parametrize("not_an_attestation", ["0xabc", 42, ["signer"], b"\x00" * 65])
def test_malformed_shapes(
    attestor: Attestor, intent: CheckoutIntent, not_an_attestation: object
) -> None:
    e = refusal(intent, not_an_attestation, [attestor.address])
    assert e.code == "attestation_malformed"


def test_high_s_signature_is_refused_even_though_it_recovers(
    attestor: Attestor, intent: CheckoutIntent
) -> None:
    """The malleable twin (n - s, flipped v) of a valid signature is not canonical (EIP-2)."""
    good = attestor.sign(intent).signature
    s = int.from_bytes(good[32:64], "big")
    twin = good[:32] + (SECP256K1_ORDER - s).to_bytes(32, "big") + bytes([55 - good[64]])
    wire = _wire(attestor, intent, signature="0x" + twin.hex())
    e = refusal(intent, wire, [attestor.address])
    assert e.code == "attestation_malformed" and "lower half" in e.message


def test_signature_that_recovers_to_no_key(attestor: Attestor, intent: CheckoutIntent) -> None:
    # r = 5 is not the x-coordinate of a curve point: ECDSA recovery has no answer.
    bad = (5).to_bytes(32, "big") + (1).to_bytes(32, "big") + b"\x1b"
    e = refusal(intent, _wire(attestor, intent, signature="0x" + bad.hex()), [attestor.address])
    assert e.code == "attestation_malformed"
    assert "recovers to no public key" in e.message


def test_attestation_object_is_checked_on_construction(
    attestor: Attestor, intent: CheckoutIntent
) -> None:
    good = attestor.sign(intent)
    with pytest.raises(AttestationMalformed, match="65 bytes"):
        dataclasses.replace(good, signature=good.signature[:64])
    with pytest.raises(AttestationMalformed, match="must be bytes"):
        dataclasses.replace(good, signature=good.signature.hex())
    with pytest.raises(AttestationMalformed, match="CheckoutIntent"):
        dataclasses.replace(good, intent=intent.to_message())


def test_signer_label_that_disagrees_with_the_signature(
    attestor: Attestor, other_attestor: Attestor, intent: CheckoutIntent
) -> None:
    """Both keys allowed, but the attestation names the wrong one: not trusted."""
    wire = _wire(other_attestor, intent, signer=attestor.address)
    e = refusal(intent, wire, [attestor.address, other_attestor.address])
    assert e.code == "attestation_malformed"
    assert e.field == "signer"


# --- signer ------------------------------------------------------------------------------


def test_signer_not_allowed(
    attestor: Attestor, other_attestor: Attestor, intent: CheckoutIntent
) -> None:
    e = refusal(intent, other_attestor.sign(intent), [attestor.address])
    assert isinstance(e, AttestationSignerNotAllowed)
    assert e.code == "attestation_signer_not_allowed"
    assert e.recovered_signer == other_attestor.address
    assert e.to_dict()["recovered_signer"] == other_attestor.address


def test_other_key_signing_in_an_allowed_attestors_name(
    attestor: Attestor, other_attestor: Attestor, intent: CheckoutIntent
) -> None:
    wire = _wire(other_attestor, intent, signer=attestor.address)
    e = refusal(intent, wire, [attestor.address])
    assert e.code == "attestation_signer_not_allowed"
    assert e.recovered_signer == other_attestor.address  # type: ignore[attr-defined]
    assert "altered, or another key signed it" in e.message


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", 1), ("wallet", OTHER_WALLET), ("reference", "order-999"),
     ("merchantId", "evil-mart"), ("requestId", "req-9"), ("timestamp", NOW_SECONDS - 1)],
)
def test_payload_altered_after_signing(
    attestor: Attestor, intent: CheckoutIntent, field: str, value: object
) -> None:
    """Editing the signed copy makes the signature recover to some unrelated key."""
    wire = _wire(attestor, intent)
    wire["payload"][field] = value
    altered = CheckoutIntent.from_message(wire["payload"])
    e = refusal(altered, wire, [attestor.address])
    assert e.code == "attestation_signer_not_allowed"


# --- mismatch ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "value", "field"),
    [
        ("amount_cents", 751, "amount"),
        ("wallet", OTHER_WALLET, "wallet"),
        ("reference", "order-124", "reference"),
        ("merchant_id", "other-merchant", "merchantId"),
        ("request_id", "req-0002", "requestId"),
        ("timestamp_seconds", NOW_SECONDS + 1, "timestamp"),
    ],
)
def test_mismatch_names_the_field(
    attestor: Attestor, attribute: str, value: object, field: str
) -> None:
    attestation = attestor.sign(make_intent())
    e = refusal(make_intent(**{attribute: value}), attestation, [attestor.address])
    assert isinstance(e, AttestationMismatch)
    assert e.code == "attestation_mismatch"
    assert e.fields == (field,)
    assert e.field == field
    assert e.to_dict()["fields"] == [field]


def test_mismatch_lists_every_differing_field(attestor: Attestor) -> None:
    attestation = attestor.sign(make_intent())
    tampered = make_intent(amount_cents=75_000, wallet=OTHER_WALLET, reference="order-124")
    e = refusal(tampered, attestation, [attestor.address])
    assert e.fields == ("wallet", "amount", "reference")  # type: ignore[attr-defined]
    assert "amount (intent 75000, attested 750)" in e.message


# --- time --------------------------------------------------------------------------------


def test_expired(attestor: Attestor, intent: CheckoutIntent) -> None:
    e = refusal(intent, attestor.sign(intent), [attestor.address], now_seconds=NOW_SECONDS + 3601)
    assert isinstance(e, AttestationExpired)
    assert e.code == "attestation_expired"
    assert e.age_seconds == 3601 and e.max_age_seconds == 3600
    e = refusal(
        intent, attestor.sign(intent), [attestor.address],
        now_seconds=NOW_SECONDS + 60.001, max_age_seconds=60,
    )
    assert e.code == "attestation_expired"


def test_from_future(attestor: Attestor, intent: CheckoutIntent) -> None:
    e = refusal(intent, attestor.sign(intent), [attestor.address], now_seconds=NOW_SECONDS - 31)
    assert isinstance(e, AttestationFromFuture)
    assert e.code == "attestation_from_future"
    assert e.ahead_seconds == 31 and e.max_future_skew_seconds == 30
    e = refusal(
        intent, attestor.sign(intent), [attestor.address],
        now_seconds=NOW_SECONDS - 1, max_future_skew_seconds=0,
    )
    assert e.code == "attestation_from_future"


# --- replay ------------------------------------------------------------------------------


def test_replay(attestor: Attestor, intent: CheckoutIntent) -> None:
    guard = InMemoryReplayGuard()
    attestation = attestor.sign(intent)
    check(intent, attestation, [attestor.address], guard=guard)
    e = refusal(intent, attestation, [attestor.address], guard=guard)
    assert isinstance(e, AttestationReplayed)
    assert e.code == "attestation_replayed"
    # Re-encoded in JSON, or the same intent signed again (same digest): still a replay.
    again = refusal(intent, attestation.to_dict(), [attestor.address], guard=guard)
    assert again.code == "attestation_replayed"
    resigned = refusal(intent, attestor.sign(intent), [attestor.address], guard=guard)
    assert resigned.code == "attestation_replayed"


def test_refused_attestation_does_not_use_up_its_digest(
    attestor: Attestor, intent: CheckoutIntent
) -> None:
    guard = InMemoryReplayGuard()
    attestation = attestor.sign(intent)
    too_early = refusal(intent, attestation, [attestor.address], guard=guard,
                        now_seconds=NOW_SECONDS - 3600)
    assert too_early.code == "attestation_from_future"
    wrong = refusal(make_intent(amount_cents=1), attestation, [attestor.address], guard=guard)
    assert wrong.code == "attestation_mismatch"
    assert len(guard) == 0
    check(intent, attestation, [attestor.address], guard=guard)
    assert len(guard) == 1


def test_replay_deferred_to_the_ledger_accepts_twice(
    attestor: Attestor, intent: CheckoutIntent
) -> None:
    attestation = attestor.sign(intent)
    first = check(intent, attestation, [attestor.address], guard=REPLAY_CHECKED_BY_LEDGER)
    second = check(intent, attestation, [attestor.address], guard=REPLAY_CHECKED_BY_LEDGER)
    assert first.digest_u128 == second.digest_u128  # the ledger sees the same user_data_128


def test_check_order_missing_before_anything(attestor: Attestor, intent: CheckoutIntent) -> None:
    assert refusal(intent, None, [attestor.address], now_seconds=0).code == "attestation_missing"


def test_check_order_signer_before_mismatch_before_time(
    attestor: Attestor, other_attestor: Attestor
) -> None:
    signed_by_other = other_attestor.sign(make_intent())
    different = make_intent(amount_cents=1)
    late = NOW_SECONDS + 10_000
    assert refusal(different, signed_by_other, [attestor.address], now_seconds=late).code == (
        "attestation_signer_not_allowed"
    )
    assert refusal(different, attestor.sign(make_intent()), [attestor.address],
                   now_seconds=late).code == "attestation_mismatch"


# --- configuration mistakes are not refusals ------------------------------------------------


def test_configuration_errors(attestor: Attestor, intent: CheckoutIntent) -> None:
    a = attestor.sign(intent)
    with pytest.raises(ValueError, match="allowed_signers is empty"):
        check(intent, a, [])
    with pytest.raises(TypeError, match="not one string"):
        check(intent, a, attestor.address)
    with pytest.raises(ValueError, match="allowed_signers: 'nope'"):
        check(intent, a, ["nope"])
    with pytest.raises(ValueError, match="max_age_seconds must be at least 1"):
        check(intent, a, [attestor.address], max_age_seconds=0)
    with pytest.raises(TypeError, match="max_age_seconds must be an int"):
        check(intent, a, [attestor.address], max_age_seconds=3600.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_future_skew_seconds must not be negative"):
        check(intent, a, [attestor.address], max_future_skew_seconds=-1)
    with pytest.raises(TypeError, match="now_seconds"):
        check(intent, a, [attestor.address], now_seconds=float("nan"))
    with pytest.raises(TypeError, match="replay_guard must have a claim"):
        check(intent, a, [attestor.address], guard=object())
    with pytest.raises(TypeError, match="intent must be a CheckoutIntent"):
        check(intent.to_message(), a, [attestor.address])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="intent must be a CheckoutIntent"):
        attestor.sign(intent.to_message())  # type: ignore[arg-type]


def test_signers_recovered_in_another_process_decide_as_inline(
    attestor: Attestor, intent: CheckoutIntent
) -> None:
    """`SignerRecovery` answers what inline recovery would: the attestor, another key, or no
    key; `verify` given those answers refuses or accepts exactly as it does inline."""
    other = Attestor("0x" + "42" * 32)
    no_key = (5).to_bytes(32, "big") + (1).to_bytes(32, "big") + b"\x1b"
    attestations = [
        attestor.sign(intent),
        other.sign(intent),
        Attestation(attestor.address, no_key, intent),
    ]
    recovery = SignerRecovery()
    try:
        signers = recovery.submit([(a.intent.digest(), a.signature) for a in attestations]
                                  ).result(timeout=60)
    finally:
        recovery.close()
    assert signers == [attestor.address, other.address, None]
    outcomes = []
    for attestation, signer in zip(attestations, signers, strict=True):
        recovered = Recovery(attestation, attestation.intent.digest(), signer)
        inline = _outcome(intent, attestation, attestor)
        offloaded = _outcome(intent, attestation, attestor, recovered)
        assert offloaded == inline
        outcomes.append(offloaded)
    assert outcomes == ["verified", "attestation_signer_not_allowed", "attestation_malformed"]


def _outcome(intent, attestation, attestor, recovery=None) -> str:
    try:
        check(intent, attestation, [attestor.address], recovery=recovery)
    except AttestationError as e:
        return e.code
    return "verified"
