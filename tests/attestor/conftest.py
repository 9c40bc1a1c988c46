"""Fixtures for the Attestor tests: two fixed keys, a fixed clock and a valid intent."""

from __future__ import annotations

import pytest
from attestor_helpers import ATTESTOR_KEY, OTHER_KEY, make_intent

from sovr.attestor import Attestor, CheckoutIntent, InMemoryReplayGuard


@pytest.fixture
def attestor() -> Attestor:
    return Attestor(ATTESTOR_KEY)


@pytest.fixture
def other_attestor() -> Attestor:
    return Attestor(OTHER_KEY)


@pytest.fixture
def intent() -> CheckoutIntent:
    return make_intent()


@pytest.fixture
def guard() -> InMemoryReplayGuard:
    return InMemoryReplayGuard()
