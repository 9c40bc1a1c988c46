"""Loading the attestor key from ATTESTOR_PRIVATE_KEY or a keystore, with errors that name
the variable and never echo the secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from attestor_helpers import ATTESTOR_KEY
from eth_account import Account

from sovr.attestor import (
    Attestor,
    AttestorKeyError,
    load_private_key,
    parse_allowed_signers,
    parse_private_key,
)

ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
KEY_BYTES = bytes.fromhex(ATTESTOR_KEY[2:])
PASSWORD = "correct horse battery staple"


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    # pbkdf2 with 2 iterations keeps the test fast; real keystores use scrypt.
    path = tmp_path / "attestor.json"
    path.write_text(json.dumps(Account.encrypt(KEY_BYTES, PASSWORD, kdf="pbkdf2", iterations=2)))
    return path


@pytest.mark.parametrize(
    "value", [ATTESTOR_KEY, ATTESTOR_KEY[2:], ATTESTOR_KEY.upper().replace("0X", "0x"),
              f"  {ATTESTOR_KEY}\n", "0X" + ATTESTOR_KEY[2:], KEY_BYTES],
)
def test_private_key_forms(value: object) -> None:
    assert parse_private_key(value) == KEY_BYTES
    assert Attestor.from_env({"ATTESTOR_PRIVATE_KEY": str(value)} if isinstance(value, str)
                             else {"ATTESTOR_PRIVATE_KEY": ATTESTOR_KEY}).address == ADDRESS


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("your_attestor_private_key", "must be 64 hex digits"),
        (ATTESTOR_KEY[:-1], "must be 64 hex digits"),
        (ATTESTOR_KEY + "00", "must be 64 hex digits"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("0x" + "00" * 32, "not a valid secp256k1 private key"),
        ("0x" + "ff" * 32, "not a valid secp256k1 private key"),
    ],
)
def test_malformed_env_key_names_the_variable(value: str, problem: str) -> None:
    with pytest.raises(AttestorKeyError) as e:
        load_private_key({"ATTESTOR_PRIVATE_KEY": value})
    assert e.value.variable == "ATTESTOR_PRIVATE_KEY"
    assert e.value.code == "attestor_key_invalid"
    assert str(e.value).startswith("ATTESTOR_PRIVATE_KEY: ")
    assert problem in str(e.value)
    if len(value.strip()) > 8:
        assert value.strip() not in str(e.value)  # the secret is never echoed


def test_attestor_constructor_rejects_bad_keys() -> None:
    with pytest.raises(AttestorKeyError, match="private_key: must be 32 bytes"):
        Attestor(b"\x01" * 31)
    with pytest.raises(AttestorKeyError, match="must be hex text or bytes"):
        Attestor(12345)  # type: ignore[arg-type]
    assert ATTESTOR_KEY[2:] not in repr(Attestor(ATTESTOR_KEY))


def test_nothing_configured() -> None:
    with pytest.raises(AttestorKeyError) as e:
        load_private_key({})
    assert e.value.variable == "ATTESTOR_PRIVATE_KEY"
    assert "ATTESTOR_KEYSTORE_FILE" in str(e.value)


def test_both_configured_is_ambiguous(keystore: Path) -> None:
    with pytest.raises(AttestorKeyError, match="not both"):
        load_private_key({"ATTESTOR_PRIVATE_KEY": ATTESTOR_KEY,
                          "ATTESTOR_KEYSTORE_FILE": str(keystore)})


def test_keystore_with_inline_password(keystore: Path) -> None:
    env = {"ATTESTOR_KEYSTORE_FILE": str(keystore), "ATTESTOR_KEYSTORE_PASSWORD": PASSWORD}
    assert load_private_key(env) == KEY_BYTES
    assert Attestor.from_env(env).address == ADDRESS


@pytest.mark.parametrize("ending", ["", "\n", "\r\n"])
def test_keystore_with_password_file(keystore: Path, tmp_path: Path, ending: str) -> None:
    password_file = tmp_path / "password"
    password_file.write_bytes((PASSWORD + ending).encode())
    env = {"ATTESTOR_KEYSTORE_FILE": str(keystore),
           "ATTESTOR_KEYSTORE_PASSWORD_FILE": str(password_file)}
    assert load_private_key(env) == KEY_BYTES


def test_keystore_wrong_password_names_both_variables(keystore: Path) -> None:
    secret = "hunter2-not-it"
    env = {"ATTESTOR_KEYSTORE_FILE": str(keystore), "ATTESTOR_KEYSTORE_PASSWORD": secret}
    with pytest.raises(AttestorKeyError) as e:
        load_private_key(env)
    assert e.value.variable == "ATTESTOR_KEYSTORE_FILE"
    assert "wrong password (from ATTESTOR_KEYSTORE_PASSWORD)" in str(e.value)
    assert secret not in str(e.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json", "is not JSON"),
        ("[1, 2]", "not a keystore"),
        ('{"crypto": {}}', "not a usable V3 keystore"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_unusable_keystore_file(tmp_path: Path, content: str | bytes, problem: str) -> None:
    path = tmp_path / "ks.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    env = {"ATTESTOR_KEYSTORE_FILE": str(path), "ATTESTOR_KEYSTORE_PASSWORD": PASSWORD}
    with pytest.raises(AttestorKeyError) as e:
        load_private_key(env)
    assert e.value.variable == "ATTESTOR_KEYSTORE_FILE"
    assert problem in str(e.value)


def test_keystore_address_must_match_its_key(keystore: Path) -> None:
    data = json.loads(keystore.read_text())
    data["address"] = "00" * 19 + "01"
    keystore.write_text(json.dumps(data))
    env = {"ATTESTOR_KEYSTORE_FILE": str(keystore), "ATTESTOR_KEYSTORE_PASSWORD": PASSWORD}
    with pytest.raises(AttestorKeyError, match="records address .* but its key is for"):
        load_private_key(env)


def test_keystore_file_and_password_problems(tmp_path: Path, keystore: Path) -> None:
    missing = str(tmp_path / "missing.json")
    with pytest.raises(AttestorKeyError) as e:
        load_private_key({"ATTESTOR_KEYSTORE_FILE": missing, "ATTESTOR_KEYSTORE_PASSWORD": "x"})
    assert e.value.variable == "ATTESTOR_KEYSTORE_FILE" and "cannot read" in str(e.value)

    with pytest.raises(AttestorKeyError) as e:
        load_private_key({"ATTESTOR_KEYSTORE_FILE": str(keystore)})
    assert e.value.variable == "ATTESTOR_KEYSTORE_PASSWORD"

    with pytest.raises(AttestorKeyError) as e:
        load_private_key({"ATTESTOR_KEYSTORE_FILE": str(keystore),
                          "ATTESTOR_KEYSTORE_PASSWORD": PASSWORD,
                          "ATTESTOR_KEYSTORE_PASSWORD_FILE": missing})
    assert "not both" in str(e.value)

    with pytest.raises(AttestorKeyError) as e:
        load_private_key({"ATTESTOR_KEYSTORE_FILE": str(keystore),
                          "ATTESTOR_KEYSTORE_PASSWORD_FILE": missing})
    assert e.value.variable == "ATTESTOR_KEYSTORE_PASSWORD_FILE"

    with pytest.raises(AttestorKeyError, match="ATTESTOR_KEYSTORE_FILE: is empty"):
        load_private_key({"ATTESTOR_KEYSTORE_FILE": " ", "ATTESTOR_KEYSTORE_PASSWORD": "x"})


def test_allowed_signers_list() -> None:
    other = "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"
    text = f" {ADDRESS.lower()},{other}\n{ADDRESS} "
    assert parse_allowed_signers(text) == frozenset({ADDRESS, other})
    with pytest.raises(AttestorKeyError, match="^ATTESTOR_ALLOWED_SIGNERS: lists no"):
        parse_allowed_signers(" , ")
    with pytest.raises(AttestorKeyError, match="'0x1234'"):
        parse_allowed_signers(f"{ADDRESS},0x1234")
    bad_checksum = "0x2C7536E3605D9C16a7a3D7b1898e529396a65c23"
    with pytest.raises(AttestorKeyError, match="checksum"):
        parse_allowed_signers(bad_checksum)
