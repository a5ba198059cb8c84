"""The one typed error of the keys service: bad input, carried to the edge as its error code."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "invalid_scope", "invalid_expiration", "invalid_ttl", "expiration_required", "invalid_request"
]


class KeyValidationError(ValueError):
    """A request the service refuses; `code` becomes gRPC trailing metadata `error-code`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
