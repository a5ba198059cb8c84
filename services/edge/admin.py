"""Admin auth (http-api §1): `Bearer <SIGNALBOX_ADMIN_TOKEN>`, compared in constant time.

Every admin router depends on `require_admin`; all failures are 401 with a distinct code so an
operator can tell a missing token from a wrong one from a disabled admin surface.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request

from services.edge.auth import bearer_token
from services.edge.errors import ApiError


def require_admin(request: Request) -> None:
    expected: str | None = request.app.state.runtime.settings.admin_token
    if expected is None:
        raise ApiError(401, "admin_disabled", "Admin routes are off: set SIGNALBOX_ADMIN_TOKEN")
    presented = bearer_token(request.headers.get("authorization"))
    if presented is None:
        raise ApiError(401, "missing_admin_token", "Admin token required (Authorization: Bearer …)")
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise ApiError(401, "invalid_admin_token", "Invalid admin token")


def admin_router(prefix: str = "") -> APIRouter:
    """An APIRouter whose every route requires the admin token."""
    return APIRouter(prefix=prefix, dependencies=[Depends(require_admin)])
