"""OpenAI-style errors (http-api §2): one exception type, one body shape, no stack traces out.

Handlers turn every expected failure into `{"error":{message,type,param,code}}`; bugs are
caught by `middleware.EdgeMiddleware`, so a client never sees a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}
_RETRY_AFTER_STATUSES = (429, 503)


def error_type_for(status: int) -> str:
    """The §2 `type` of a status; statuses outside the table follow their class."""
    return ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "server_error")


class ApiError(Exception):
    """A failure with a client-facing status and `code`; raised anywhere, rendered once."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        retry_after: int | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.error_type = error_type or error_type_for(status)
        self.headers = dict(headers or {})

    def body(self) -> dict[str, object]:
        return error_body(self.message, self.error_type, self.code, self.param)

    def to_response(self) -> Response:
        headers = dict(self.headers)
        if self.status in _RETRY_AFTER_STATUSES:
            headers["retry-after"] = str(max(1, self.retry_after or 1))
        return json_response(self.body(), self.status, headers)


def error_body(
    message: str, error_type: str, code: str | None, param: str | None = None
) -> dict[str, object]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def json_response(
    content: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content), status_code=status, headers=headers, media_type="application/json"
    )


def invalid_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request", message, param=param)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.to_response()


async def _http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = "not_found" if exc.status_code == 404 else None
    message = exc.detail if isinstance(exc.detail, str) else "Request failed"
    return ApiError(exc.status_code, code, message).to_response()


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return invalid_request(str(first.get("msg", "Invalid request")), param).to_response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
