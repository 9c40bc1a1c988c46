"""Is a narrative really the one its transfer was cleared with? Checks that need no trust.

The terminal binds each narrative to the ledger in three ways, and `problems` checks each
against the mirrored leg 0 (the obligation's first transfer):

- the obligation id is derived from (caller, intent id): `ids.intent_transfer_id`;
- leg 0's `user_data_64` is a 64-bit hash of `said`, the text of everything the caller
  said (user, amount, purpose, reference, timeout), and `said` must agree with the
  narrative's own columns;
- the attestation: its EIP-712 digest is recomputed from the narrative (intent id, wallet,
  amount, purpose, timestamp, reference) and its signature must recover to the signer.

`narrative_sha256` (computed as the row enters PostgreSQL) covers every column, so an edit
to a column none of the above covers is still found.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from sovr.attestor.attestation import recover_signer
from sovr.attestor.errors import AttestationError, IntentInvalid
from sovr.attestor.typed_data import CheckoutIntent
from sovr.clearing import ids
from sovr.clearing.obligation import fingerprint

# Every column a narrative row carries from the terminal, in hashing order.
HASHED_COLUMNS = (
    "obligation_id", "fingerprint", "kind", "caller", "intent_id", "terminal_id", "said",
    "user_key", "wallet", "purpose", "amount_cents", "reference", "attestation_signer",
    "attestation_signature", "attestation_digest", "attestation_timestamp", "details")


def narrative_sha256(row: Mapping[str, Any]) -> str:
    values = []
    for column in HASHED_COLUMNS:
        value = row[column]
        if isinstance(value, dict):
            value = canonical_details(value)
        elif value is not None and not isinstance(value, str):
            value = str(int(value))
        values.append(value)
    return sha256_of_texts(values)


def canonical_details(details: dict[str, Any]) -> str:
    return orjson.dumps(details, option=orjson.OPT_SORT_KEYS).decode()


def sha256_of_texts(values: list[str | None]) -> str:
    """The hash over `HASHED_COLUMNS` once each is text (integers in decimal) or None."""
    assert len(values) == len(HASHED_COLUMNS)
    return hashlib.sha256(orjson.dumps(values)).hexdigest()


def problems(narrative: Mapping[str, Any], leg0: Mapping[str, Any]) -> list[str]:
    """What is wrong with `narrative` as the story of `leg0` (empty: it is bound)."""
    found = []
    obligation_id = int(narrative["obligation_id"])
    if obligation_id != int(leg0["transfer_id"]):
        found.append(f"narrative is for {obligation_id}, not transfer {leg0['transfer_id']}")
    derive = ids.journal_line_id if narrative["kind"] == "journal" else ids.intent_transfer_id
    if derive(narrative["caller"], narrative["intent_id"], 0) != obligation_id:
        found.append("caller and intent id do not derive the obligation id")
    if fingerprint(narrative["said"]) != int(leg0["user_data_64"]):
        found.append("what was said does not hash to leg 0's fingerprint (user_data_64)")
    if narrative_sha256(narrative) != narrative["narrative_sha256"]:
        found.append("narrative_sha256 does not match the row (a column was changed)")
    if narrative["kind"] != "journal":  # a journal's `said` is its request as JSON
        found += _said_problems(narrative)
    if narrative.get("attestation_signature"):
        found += _attestation_problems(narrative)
    return found


def _said_problems(n: Mapping[str, Any]) -> list[str]:
    parts = n["said"].split("\x1f")
    if n.get("user_key") is not None and (len(parts) < 2 or parts[1] != n["user_key"]):
        return ["said names another user than the narrative"]
    amount = n.get("amount_cents")
    if amount is not None and str(int(amount)) not in parts:
        return ["said names another amount than the narrative"]
    return []


def _attestation_problems(n: Mapping[str, Any]) -> list[str]:
    try:
        intent = CheckoutIntent(n["intent_id"], n["wallet"], int(n["amount_cents"]),
                                n["purpose"], int(n["attestation_timestamp"]), n["reference"])
        digest = intent.digest()
        signature = bytes.fromhex(n["attestation_signature"].removeprefix("0x"))
        signer = recover_signer(digest, signature)
    except (AttestationError, IntentInvalid, ValueError, TypeError) as e:
        return [f"attestation cannot be checked: {e}"]
    found = []
    if "0x" + digest.hex() != n.get("attestation_digest"):
        found.append("attestation digest does not match the intent the narrative describes")
    if signer != n.get("attestation_signer"):
        found.append(f"attestation signature recovers to {signer}, not the recorded signer")
    return found
