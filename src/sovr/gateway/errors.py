"""`ApiError`: every refusal a sovr HTTP service sends has one shape.

    {"error": {"code": "insufficient_funds", "message": "...", "field": null},
     "request_id": "..."}

`code` is stable and machine-readable; `message` is for people; `field` names the input
that broke a rule (dotted path, e.g. `intents.3.amount_cents`).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, field: str | None = None,
        headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self, request_id: str | None) -> dict[str, Any]:
        error = {"code": self.code, "message": self.message, "field": self.field}
        return {"error": error, **self.extra, "request_id": request_id}
