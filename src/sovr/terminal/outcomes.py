"""What the terminal answers about one intent, and the refusals it can raise.

`IntentOutcome` is the service's plain result (a dataclass; the HTTP layer sends
`to_json()`, shaped like `schemas.Outcome`). `TerminalError` is a refusal of a whole request
(not found, conflict, invalid input), with a `kind` the HTTP layer maps to a status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ErrorKind = Literal["invalid", "not_found", "conflict", "rejected"]


class TerminalError(Exception):
    def __init__(self, kind: ErrorKind, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message
        self.field = field


@dataclass(slots=True)
class IntentOutcome:
    status: str  # cleared, authorized, captured, voided, expired, funded, rejected, conflict,
    #              invalid
    intent_id: str | None = None
    duplicate: bool = False
    transfer_id: int | None = None
    authorization: bool = False
    timestamp: int | None = None
    amount_cents: int | None = None
    code: str | None = None
    message: str | None = None
    field: str | None = None

    @property
    def refused(self) -> bool:
        return self.status in ("rejected", "conflict", "invalid")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"intent_id": self.intent_id, "status": self.status,
                               "duplicate": self.duplicate}
        if self.transfer_id is not None:
            out["transfer_id"] = str(self.transfer_id)
            if self.authorization:
                out["authorization_id"] = str(self.transfer_id)
        if self.timestamp:
            out["timestamp"] = str(self.timestamp)
        if self.amount_cents is not None:
            out["amount_cents"] = self.amount_cents
        if self.code is not None:
            out["code"] = self.code
            out["message"] = self.message
            out["field"] = self.field
        return out


def invalid(intent_id: str | None, field: str | None, message: str) -> IntentOutcome:
    return IntentOutcome("invalid", intent_id, code="invalid_request", message=message,
                         field=field)
