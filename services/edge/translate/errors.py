"""The one error type of the translation layer, already shaped like the edge's error body."""

from __future__ import annotations

from typing import Any

# http-api.md §2: the error `type` follows from the status.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    404: "not_found_error",
    502: "upstream_error",
}


class TranslationError(Exception):
    """A body that cannot be translated faithfully (conversion.md §7), or a broken upstream answer.

    `param` is the JSON path of the offending field (e.g. `messages[2].content[0]`) so a
    client can find what to change without reading our source.
    """

    def __init__(self, message: str, param: str | None, code: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status

    @property
    def error_type(self) -> str:
        return _TYPE_BY_STATUS.get(self.status, "invalid_request_error")

    def to_body(self) -> dict[str, Any]:
        """The `{"error": {...}}` body of http-api.md §2."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def __repr__(self) -> str:
        return (
            f"TranslationError(status={self.status}, code={self.code!r}, "
            f"param={self.param!r}, message={self.message!r})"
        )


def unsupported(field: str, param: str, direction: str) -> TranslationError:
    """The §7 `unsupported_parameter` error, worded like OpenAI's own."""
    return TranslationError(
        f"'{field}' cannot be translated for a {direction}-mode upstream",
        param,
        "unsupported_parameter",
    )


def invalid(message: str, param: str | None) -> TranslationError:
    """A malformed body: the client sent something neither API accepts."""
    return TranslationError(message, param, "invalid_request")
