"""One pure-ASGI middleware for every sovr service: request id, size limit, access log.

- **Request id**: a client's `X-Request-Id` (1-128 visible ASCII characters) is kept,
  anything else replaced by a fresh one; it is echoed in the response header, in every error
  body and in every log line written while serving the request.
- **Size limit**: a body larger than the path's limit is refused with 413 before it is read
  whole (the declared `Content-Length` is checked first; a chunked body is read here, counted
  as it arrives, and handed on whole).
- **Access log**: one JSON line per request: method, path, status, duration, caller.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable

import orjson

from sovr.gateway.errors import ApiError
from sovr.gateway.logs import ACCESS_LOG, REQUEST_ID

log = logging.getLogger("sovr.http")
_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")
# A random prefix per process and a counter: unique across terminals and restarts without
# reading the OS's random source on every request.
_ID_PREFIX = secrets.token_hex(6)
_ID_COUNTER = itertools.count(1)


class GatewayMiddleware:
    def __init__(self, app, *, max_body_bytes: Callable[[str], int]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = [500]
        try:
            limit = self.max_body_bytes(scope["path"])
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await _send_error(send, request_id, _too_large(limit), status_holder)
                return
            if declared is None:
                # Chunked (or no body): read it here, bounded, so an oversize body is a 413,
                # not a parse error deep in the framework. A declared length is enforced by
                # the HTTP server itself.
                body = await _read_bounded(receive, limit)
                if body is None:
                    await _send_error(send, request_id, _too_large(limit), status_holder)
                    return
                receive = _replay(body)
            await self._serve(scope, receive, send, request_id, status_holder)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            if ACCESS_LOG.enabled:
                ACCESS_LOG.write({
                    "request_id": request_id, "method": scope["method"], "path": scope["path"],
                    "status": status_holder[0], "duration_ms": round(duration_ms, 3),
                    "caller": scope["state"].get("caller"),
                })
            REQUEST_ID.reset(token)

    async def _serve(self, scope, receive, send, request_id, status_holder) -> None:
        header = (b"x-request-id", request_id.encode())
        started_response = [False]

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                started_response[0] = True
                status_holder[0] = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Caught here, not by a FastAPI handler: Starlette re-raises after its handler,
            # and the server then drops the keep-alive connection.
            log.exception("unhandled error")
            if not started_response[0]:
                error = ApiError(500, "internal_error",
                                 "an internal error; nothing was acknowledged")
                await _send_error(send, request_id, error, status_holder)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large", f"the request body exceeds {limit} bytes")


def _request_id(scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return value.decode()
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_bounded(receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes):
    sent = [False]

    async def receive():
        if sent[0]:
            return {"type": "http.disconnect"}
        sent[0] = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _send_error(send, request_id: str, error: ApiError, status_holder) -> None:
    status_holder[0] = error.status
    body = orjson.dumps(error.body(request_id))
    await send({"type": "http.response.start", "status": error.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()), (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})
