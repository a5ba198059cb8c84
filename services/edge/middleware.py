"""Outermost ASGI layer: the `x-request-id` on every response and the last-resort 500.

Pure ASGI (not BaseHTTPMiddleware) so SSE bodies stream through untouched.
"""

from __future__ import annotations

import logging
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.logging import request_id_var
from services.edge.errors import ApiError

log = logging.getLogger(__name__)

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# httptools sets no limit of its own; nginx in front allows 4 x 8 KiB by default.
MAX_HEADER_BYTES = 64 * 1024


def request_id_from(header: str | None) -> str:
    """The client's id when it is safe to echo (http-api §1), else a fresh `req_` + 24 hex."""
    if header and _CLIENT_ID.fullmatch(header):
        return header
    return "req_" + secrets.token_hex(12)


class EdgeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"x-request-id")
        request_id = request_id_from(header)
        scope.setdefault("state", {})["request_id"] = request_id
        rid_token = request_id_var.set(request_id)  # on every log line of this request
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if sum(len(k) + len(v) for k, v in scope.get("headers", ())) > MAX_HEADER_BYTES:
                too_large = ApiError(
                    431, "headers_too_large", f"Request headers exceed {MAX_HEADER_BYTES} bytes"
                )
                await too_large.to_response()(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.exception(
                "unhandled error",
                extra={
                    "path": scope.get("path"),
                    "request_id": request_id,
                    "error_type": type(exc).__name__,
                },
            )
            if started:
                raise
            response = ApiError(500, "internal_error", "Internal server error").to_response()
            await response(scope, receive, send_with_id)
        finally:
            request_id_var.reset(rid_token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None
