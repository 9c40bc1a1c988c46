"""FastAPI glue shared by every sovr service: auth dependencies, JSON responses, errors."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sovr.gateway.errors import ApiError
from sovr.gateway.keys import ApiKey, KeyStore, Scope
from sovr.gateway.ratelimit import RateLimiter, retry_after_header

log = logging.getLogger("sovr.http")


def json_response(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


class Gateway:
    """Authentication and rate limiting, as FastAPI dependencies."""

    def __init__(self, keys: KeyStore, limiter: RateLimiter | None = None) -> None:
        self.keys = keys
        self.limiter = limiter or RateLimiter()

    def authenticate(self, authorization: str, scopes: tuple[Scope, ...]) -> ApiKey:
        """The key behind an `Authorization` header value, allowed and within its rate;
        otherwise `ApiError` 401, 403 or 429."""
        if not authorization.startswith("Bearer "):
            raise ApiError(401, "unauthenticated", "send 'Authorization: Bearer <API key>'",
                           headers={"WWW-Authenticate": "Bearer"})
        key = self.keys.authenticate(authorization[7:].strip())
        if key is None:
            raise ApiError(401, "invalid_api_key", "unknown, malformed or revoked API key",
                           headers={"WWW-Authenticate": "Bearer"})
        if not key.allows(*scopes):
            raise ApiError(403, "forbidden", "this key needs one of the scopes: "
                           + ", ".join(s.value for s in scopes))
        wait = self.limiter.acquire(key.key_id, key.rate_per_second)
        if wait:
            raise ApiError(429, "rate_limited",
                           f"more than {key.rate_per_second} requests a second for this key",
                           headers={"Retry-After": retry_after_header(wait)})
        return key

    def require(self, *scopes: Scope):
        """`authenticate` as a FastAPI dependency; the caller is noted for the access log."""

        async def dependency(request: Request) -> ApiKey:
            key = self.authenticate(request.headers.get("authorization", ""), scopes)
            request.state.caller = key.caller
            return key

        return Depends(dependency)


def request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def install_gateway_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return json_response(error.status, error.body(request_id(request)), error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        api = ApiError(error.status_code, code, f"{request.method} {request.url.path}: "
                       f"{error.detail}", headers=dict(error.headers or {}))
        return json_response(api.status, api.body(request_id(request)), api.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        api = validation_api_error(error.errors())
        return json_response(api.status, api.body(request_id(request)))


def validation_api_error(errors: list[dict]) -> ApiError:
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return ApiError(400, "malformed_json", f"the body is not valid JSON: {first['msg']}")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = ".".join(loc) or None
    return ApiError(422, "invalid_request", f"{field or 'body'}: {first['msg']}", field=field)
