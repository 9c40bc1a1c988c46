"""The CheckoutIntent typed data: known answers and the field rules.

The known-answer tests compute the EIP-712 digest a second way, by hand from the spec
(typeHash, encodeData with `eth_abi.encode`, `keccak`), check that hand encoder against the
spec's own published example (the "Ether Mail" vector of EIP-712), and sign the digest
directly with `eth_keys`, so the module's digest and signature are pinned by something
other than the code under test.
"""

from __future__ import annotations

import json

import pytest
from attestor_helpers import ATTESTOR_KEY, NOW_SECONDS, WALLET, make_intent
from eth_abi import encode
from eth_account.messages import encode_typed_data
from eth_keys import keys
from eth_utils import keccak

from sovr.attestor import (
    AMOUNT_MAX_CENTS,
    Attestor,
    CheckoutIntent,
    IntentInvalid,
)

# --- an EIP-712 encoder written from the spec, for these tests only -------------------


def _type_hash(encoded_type: str) -> bytes:
    return keccak(text=encoded_type)


def _encode_value(kind: str, value: object) -> tuple[str, object]:
    """encodeData's rule per atomic/dynamic type: strings are hashed, the rest ABI-encoded."""
    if kind == "string":
        return "bytes32", keccak(text=value)  # type: ignore[arg-type]
    return kind, value


def _hash_struct(encoded_type: str, fields: list[tuple[str, object]]) -> bytes:
    kinds = ["bytes32"]
    values: list[object] = [_type_hash(encoded_type)]
    for kind, value in fields:
        k, v = _encode_value(kind, value)
        kinds.append(k)
        values.append(v)
    return keccak(encode(kinds, values))


def _digest(domain_separator: bytes, struct_hash: bytes) -> bytes:
    return keccak(b"\x19\x01" + domain_separator + struct_hash)


def test_hand_encoder_reproduces_the_eip712_spec_example() -> None:
    """EIP-712's "Ether Mail" example: the published domain separator, hash and signature."""
    domain_type = (
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    person = "Person(string name,address wallet)"
    mail = "Mail(Person from,Person to,string contents)" + person
    domain_separator = _hash_struct(
        domain_type,
        [
            ("string", "Ether Mail"),
            ("string", "1"),
            ("uint256", 1),
            ("address", "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"),
        ],
    )
    cow = _hash_struct(
        person, [("string", "Cow"), ("address", "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826")]
    )
    bob = _hash_struct(
        person, [("string", "Bob"), ("address", "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB")]
    )
    message = _hash_struct(mail, [("bytes32", cow), ("bytes32", bob), ("string", "Hello, Bob!")])
    digest = _digest(domain_separator, message)

    assert domain_separator.hex() == (
        "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
    )
    assert message.hex() == "c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e"
    assert digest.hex() == "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    signature = keys.PrivateKey(keccak(text="cow")).sign_msg_hash(digest)
    assert signature.v == 1  # 28 in the spec's 27/28 convention
    assert signature.r == 0x4355C47D63924E8A72E509B65029052EB6C299D53A04E167C5775FD466751C9D
    assert signature.s == 0x07299936D304C153F6443DFA05F40FF007D72911B6F72307F996231605B91562


CHECKOUT_INTENT_TYPE = (
    "CheckoutIntent(string requestId,address wallet,uint256 amount,string merchantId,"
    "uint256 timestamp,string reference)"
)
KNOWN_DIGEST = "2bf991e84e343f03eabe7eeb1a082f2ef734a067787e4be52dff9c51ac4331ac"
KNOWN_SIGNATURE = (
    "3b3b7b67ced529afd07e853d16c615dc409909031bfbc296f55cc003a41a8a17"
    "7cb6edf4e21b8473794c76972c46e9ba7965a7e2bc39b894e499cb713a87e8f9"
    "1c"
)


def _hand_digest(intent: CheckoutIntent) -> bytes:
    domain_separator = _hash_struct(
        "EIP712Domain(string name,string version,uint256 chainId)",
        [("string", "SOVR Attestor"), ("string", "1.0"), ("uint256", 1)],
    )
    struct_hash = _hash_struct(
        CHECKOUT_INTENT_TYPE,
        [
            ("string", intent.request_id),
            ("address", intent.wallet),
            ("uint256", intent.amount_cents),
            ("string", intent.merchant_id),
            ("uint256", intent.timestamp_seconds),
            ("string", intent.reference),
        ],
    )
    return _digest(domain_separator, struct_hash)


def test_known_answer_digest_and_signature() -> None:
    intent = make_intent()
    attestor = Attestor(ATTESTOR_KEY)
    assert attestor.address == "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"

    hand = _hand_digest(intent)
    assert hand.hex() == KNOWN_DIGEST
    assert intent.digest() == hand
    signable = encode_typed_data(full_message=intent.typed_data())
    assert keccak(b"\x19" + signable.version + signable.header + signable.body) == hand

    attestation = attestor.sign(intent)
    assert attestation.signature.hex() == KNOWN_SIGNATURE
    direct = keys.PrivateKey(bytes.fromhex(ATTESTOR_KEY[2:])).sign_msg_hash(hand)
    assert attestation.signature == direct.to_bytes()[:64] + bytes([27 + direct.v])
    assert direct.recover_public_key_from_msg_hash(hand).to_checksum_address() == (
        attestor.address
    )


def test_typed_data_document_matches_seed_004_plus_reference() -> None:
    doc = make_intent().typed_data()
    assert doc["primaryType"] == "CheckoutIntent"
    assert doc["domain"] == {"name": "SOVR Attestor", "version": "1.0", "chainId": 1}
    assert [f["name"] for f in doc["types"]["CheckoutIntent"]] == [
        "requestId", "wallet", "amount", "merchantId", "timestamp", "reference",
    ]
    assert doc["message"] == {
        "requestId": "req-0001",
        "wallet": WALLET,
        "amount": 750,
        "merchantId": "studio-demo",
        "timestamp": NOW_SECONDS,
        "reference": "order-123",
    }
    json.dumps(doc)  # a JSON document a browser wallet or ethers can sign as is


def test_every_field_is_bound_into_the_digest() -> None:
    base = make_intent().digest()
    changes = {
        "request_id": "req-0002",
        "wallet": "0x" + "12" * 20,
        "amount_cents": 751,
        "merchant_id": "studio-demo2",
        "timestamp_seconds": NOW_SECONDS + 1,
        "reference": "order-124",
    }
    digests = {make_intent(**{k: v}).digest() for k, v in changes.items()}
    assert base not in digests and len(digests) == len(changes)


# --- field rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (3.5, "integer number of cents, got float 3.5"),
        (350.0, "integer number of cents, got float 350.0"),
        (True, "integer number of cents, got bool"),
        ("350", "integer number of cents, got str"),
        (-1, "at least 1 cent"),
        (0, "at least 1 cent"),
        (AMOUNT_MAX_CENTS + 1, "at most 2**128-1"),
    ],
)
def test_amount_rules_name_the_field(value: object, rule: str) -> None:
    with pytest.raises(IntentInvalid) as e:
        make_intent(amount_cents=value)
    assert e.value.field == "amount"
    assert e.value.code == "intent_invalid"
    assert rule in str(e.value)


def test_amount_range_edges_are_accepted() -> None:
    assert make_intent(amount_cents=1).amount_cents == 1
    assert make_intent(amount_cents=AMOUNT_MAX_CENTS).amount_cents == AMOUNT_MAX_CENTS


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (1.5, "whole seconds"),
        (False, "whole seconds"),
        (0, "positive"),
        (NOW_SECONDS * 1000, "looks like milliseconds"),
    ],
)
def test_timestamp_rules(value: object, rule: str) -> None:
    with pytest.raises(IntentInvalid) as e:
        make_intent(timestamp_seconds=value)
    assert e.value.field == "timestamp"
    assert rule in e.value.rule


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("5B38Da6a701c568545dCfcB03FcB875f56beddC4", "0x followed by 40 hex digits"),
        ("0x5B38Da6a701c568545dCfcB03FcB875f56beddC", "0x followed by 40 hex digits"),
        ("0x5B38Da6a701c568545dCfcB03FcB875f56beddZ4", "0x followed by 40 hex digits"),
        ("0x5b38Da6a701c568545dCfcB03FcB875f56beddC4", "wrong EIP-55 checksum"),
        ("0x" + "0" * 40, "zero address"),
        (b"\x5b" * 20, "must be a string"),
    ],
)
def test_wallet_rules(value: object, rule: str) -> None:
    with pytest.raises(IntentInvalid) as e:
        make_intent(wallet=value)
    assert e.value.field == "wallet"
    assert rule in e.value.rule


def test_wallet_is_normalized_to_its_checksum() -> None:
    lower = make_intent(wallet=WALLET.lower())
    upper = make_intent(wallet="0x" + WALLET[2:].upper())
    assert lower.wallet == upper.wallet == WALLET
    assert lower == upper == make_intent()
    assert lower.digest() == make_intent().digest()


@pytest.mark.parametrize(
    ("attribute", "field"),
    [("request_id", "requestId"), ("merchant_id", "merchantId"), ("reference", "reference")],
)
@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("", "must not be empty"),
        (" order", "white space"),
        ("order\n", "white space"),
        ("ord\ner", "control character U+000A"),
        ("ord\x00er", "control character U+0000"),
        ("x" * 257, "at most 256 UTF-8 bytes"),
        ("é" * 129, "at most 256 UTF-8 bytes, got 258"),
        ("\udc80", "lone surrogates"),
        (123, "must be a string, got int"),
        (None, "must be a string, got NoneType"),
    ],
)
def test_text_rules(attribute: str, field: str, value: object, rule: str) -> None:
    with pytest.raises(IntentInvalid) as e:
        make_intent(**{attribute: value})
    assert e.value.field == field
    assert rule in e.value.rule
    assert e.value.to_dict()["field"] == field


def test_text_accepts_unicode_up_to_the_byte_limit() -> None:
    assert make_intent(reference="é" * 128).reference == "é" * 128
    assert make_intent(merchant_id="Café Ünïcode 🥛").merchant_id == "Café Ünïcode 🥛"


# --- wire form --------------------------------------------------------------------------


def test_wire_round_trip_and_decimal_strings() -> None:
    intent = make_intent(amount_cents=AMOUNT_MAX_CENTS)
    message = intent.to_message()
    assert CheckoutIntent.from_message(message) == intent
    as_strings = {**message, "amount": str(AMOUNT_MAX_CENTS), "timestamp": str(NOW_SECONDS)}
    assert CheckoutIntent.from_message(as_strings) == intent
    assert CheckoutIntent.from_message(json.loads(json.dumps(message))) == intent


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"amount": "3.50"}, "amount", "canonical decimal integer"),
        ({"amount": "0350"}, "amount", "canonical decimal integer"),
        ({"amount": "-1"}, "amount", "canonical decimal integer"),
        ({"amount": " 350"}, "amount", "canonical decimal integer"),
        ({"amount": "٣٥٠"}, "amount", "canonical decimal integer"),
        ({"amount": 3.5}, "amount", "float"),
        ({"timestamp": "1.7e9"}, "timestamp", "canonical decimal integer"),
        ({"extra": 1}, "extra", "unknown field"),
    ],
)
def test_wire_form_is_strict(change: dict, field: str, rule: str) -> None:
    message = {**make_intent().to_message(), **change}
    with pytest.raises(IntentInvalid) as e:
        CheckoutIntent.from_message(message, prefix="payload.")
    assert e.value.field == "payload." + field
    assert rule in e.value.rule


def test_wire_form_requires_every_field() -> None:
    message = make_intent().to_message()
    del message["reference"]
    with pytest.raises(IntentInvalid, match=r"^reference: is required$"):
        CheckoutIntent.from_message(message)
    with pytest.raises(IntentInvalid, match="must be an object"):
        CheckoutIntent.from_message([1, 2])
