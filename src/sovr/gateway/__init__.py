"""The gateway: what every sovr HTTP service puts in front of its routes.

- `keys`: API keys with scopes, stored hashed in SQLite, created with `sovr keys create`;
- `ratelimit`: a token bucket per key;
- `middleware`: request ids, the per-path request size limit and one JSON access-log line
  per request (pure ASGI: Starlette's `BaseHTTPMiddleware` costs ~100 µs a request);
- `logs`: JSON log lines, each carrying the request id of the request that wrote it;
- `errors`: `ApiError`, the one error shape `{"error": {"code", "message", "field"}}`.
"""
