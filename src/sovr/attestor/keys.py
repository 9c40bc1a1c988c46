"""Loading the attestor's signing key and the terminal's list of allowed attestors.

The key comes from exactly one of:
- `ATTESTOR_PRIVATE_KEY`: 32 bytes as 64 hex digits, with or without `0x` (seed 004's
  variable); surrounding white space, as left by an env file, is ignored;
- `ATTESTOR_KEYSTORE_FILE`: an Ethereum V3 keystore (JSON, as written by geth, clef,
  MetaMask exports or `eth_account.Account.encrypt`), decrypted with the password from
  `ATTESTOR_KEYSTORE_PASSWORD` or from the file named by `ATTESTOR_KEYSTORE_PASSWORD_FILE`
  (one trailing newline is dropped, as `echo pw > file` adds one).

Setting both, or neither, is an error: guessing which key signs money is not a default.
Every error is an `AttestorKeyError` naming the variable to fix; no message contains a key
or a password.

`ATTESTOR_ALLOWED_SIGNERS` is the verifying side's list (seed 003's `allowed_attestors`):
comma- or white-space-separated addresses, parsed by `parse_allowed_signers`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from eth_account import Account

from sovr.attestor.errors import AttestorKeyError, IntentInvalid
from sovr.attestor.typed_data import check_wallet

ENV_PRIVATE_KEY: Final = "ATTESTOR_PRIVATE_KEY"
ENV_KEYSTORE_FILE: Final = "ATTESTOR_KEYSTORE_FILE"
ENV_KEYSTORE_PASSWORD: Final = "ATTESTOR_KEYSTORE_PASSWORD"
ENV_KEYSTORE_PASSWORD_FILE: Final = "ATTESTOR_KEYSTORE_PASSWORD_FILE"
ENV_ALLOWED_SIGNERS: Final = "ATTESTOR_ALLOWED_SIGNERS"

SECP256K1_ORDER: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

_HEX_KEY = re.compile(r"(?:0[xX])?([0-9a-fA-F]{64})")


def parse_private_key(value: object, *, source: str = ENV_PRIVATE_KEY) -> bytes:
    """32 raw bytes or 64 hex digits (optional 0x) → the 32-byte key, or `AttestorKeyError`.

    `source` names where the value came from, for the error.
    """
    if isinstance(value, bytes | bytearray):
        key = bytes(value)
        if len(key) != 32:
            raise AttestorKeyError(source, f"must be 32 bytes, got {len(key)}")
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise AttestorKeyError(source, "is empty")
        match = _HEX_KEY.fullmatch(text)
        if match is None:
            raise AttestorKeyError(
                source,
                f"must be 64 hex digits (32 bytes), optionally prefixed with 0x; got "
                f"{len(text)} characters that are not",
            )
        key = bytes.fromhex(match.group(1))
    else:
        raise AttestorKeyError(source, f"must be hex text or bytes, got {type(value).__name__}")
    if not 0 < int.from_bytes(key, "big") < SECP256K1_ORDER:
        raise AttestorKeyError(source, "is not a valid secp256k1 private key (0 or ≥ the order)")
    return key


def load_private_key(environ: Mapping[str, str] | None = None) -> bytes:
    """The attestor's 32-byte key from the environment (see the module docstring)."""
    env = os.environ if environ is None else environ
    raw_key = env.get(ENV_PRIVATE_KEY)
    keystore = env.get(ENV_KEYSTORE_FILE)
    if raw_key is not None and keystore is not None:
        raise AttestorKeyError(
            ENV_PRIVATE_KEY, f"set either {ENV_PRIVATE_KEY} or {ENV_KEYSTORE_FILE}, not both"
        )
    if raw_key is not None:
        return parse_private_key(raw_key, source=ENV_PRIVATE_KEY)
    if keystore is not None:
        return _load_keystore(keystore, env)
    raise AttestorKeyError(
        ENV_PRIVATE_KEY,
        f"no attestor key configured: set {ENV_PRIVATE_KEY} (hex) or {ENV_KEYSTORE_FILE} "
        f"(with {ENV_KEYSTORE_PASSWORD} or {ENV_KEYSTORE_PASSWORD_FILE})",
    )


def _load_keystore(path_text: str, env: Mapping[str, str]) -> bytes:
    if not path_text.strip():
        raise AttestorKeyError(ENV_KEYSTORE_FILE, "is empty")
    password = _keystore_password(env)
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise AttestorKeyError(ENV_KEYSTORE_FILE, f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise AttestorKeyError(ENV_KEYSTORE_FILE, f"{path} is not UTF-8 text") from None
    try:
        keystore = json.loads(text)
    except json.JSONDecodeError as e:
        raise AttestorKeyError(ENV_KEYSTORE_FILE, f"{path} is not JSON: {e.msg}") from None
    if not isinstance(keystore, dict):
        raise AttestorKeyError(ENV_KEYSTORE_FILE, f"{path} is not a keystore (not an object)")
    try:
        key = bytes(Account.decrypt(keystore, password))
    except ValueError as e:
        if "MAC mismatch" in str(e):
            raise AttestorKeyError(
                ENV_KEYSTORE_FILE,
                f"cannot decrypt {path}: wrong password (from {_password_variable(env)}) "
                "or a corrupted keystore",
            ) from None
        raise AttestorKeyError(
            ENV_KEYSTORE_FILE, f"{path} is not a usable V3 keystore: {e}"
        ) from None
    except Exception as e:  # KeyError, TypeError, NotImplementedError from eth-keyfile
        raise AttestorKeyError(
            ENV_KEYSTORE_FILE,
            f"{path} is not a usable V3 keystore ({type(e).__name__}: {e})",
        ) from None
    key = parse_private_key(key, source=ENV_KEYSTORE_FILE)
    recorded = keystore.get("address")
    if isinstance(recorded, str) and recorded:
        actual = Account.from_key(key).address
        if recorded.lower().removeprefix("0x") != actual[2:].lower():
            raise AttestorKeyError(
                ENV_KEYSTORE_FILE,
                f"{path} records address {recorded} but its key is for {actual}",
            )
    return key


def _password_variable(env: Mapping[str, str]) -> str:
    return ENV_KEYSTORE_PASSWORD if ENV_KEYSTORE_PASSWORD in env else ENV_KEYSTORE_PASSWORD_FILE


def _keystore_password(env: Mapping[str, str]) -> str:
    inline = env.get(ENV_KEYSTORE_PASSWORD)
    file_name = env.get(ENV_KEYSTORE_PASSWORD_FILE)
    if inline is not None and file_name is not None:
        raise AttestorKeyError(
            ENV_KEYSTORE_PASSWORD,
            f"set either {ENV_KEYSTORE_PASSWORD} or {ENV_KEYSTORE_PASSWORD_FILE}, not both",
        )
    if inline is not None:
        return inline
    if file_name is None:
        raise AttestorKeyError(
            ENV_KEYSTORE_PASSWORD,
            f"{ENV_KEYSTORE_FILE} is set, so {ENV_KEYSTORE_PASSWORD} or "
            f"{ENV_KEYSTORE_PASSWORD_FILE} must be too",
        )
    path = Path(file_name)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise AttestorKeyError(
            ENV_KEYSTORE_PASSWORD_FILE, f"cannot read {path}: {e.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise AttestorKeyError(ENV_KEYSTORE_PASSWORD_FILE, f"{path} is not UTF-8 text") from None
    return text.removesuffix("\n").removesuffix("\r")


def parse_allowed_signers(text: str, *, source: str = ENV_ALLOWED_SIGNERS) -> frozenset[str]:
    """Comma- or white-space-separated addresses → their EIP-55 forms; empty is an error.

    A verifier with no allowed attestor would refuse every intent, which is a
    misconfiguration to report at start-up, not a refusal to give each client.
    """
    items = [item for item in re.split(r"[\s,]+", text) if item]
    if not items:
        raise AttestorKeyError(source, "lists no attestor address")
    signers = set()
    for item in items:
        try:
            signers.add(check_wallet(source, item))
        except IntentInvalid as e:
            raise AttestorKeyError(source, f"{item!r}: {e.rule}") from None
    return frozenset(signers)
