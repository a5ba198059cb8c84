"""`GET /v1/models` and `/models` (http-api §4): what a client may ask for, OpenAI-shaped.

Aliases (alias table and KNN, `owned_by: "signalbox"`) and catalog models (`owned_by` = the
provider), from the router's catalog as the edge last fetched it; sorted by id and filtered by
the key's `models:` scopes. Empty when the router is off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.edge.catalog_view import CatalogSnapshot
from services.edge.errors import ApiError, json_response
from services.keys.scopes import check_scopes, model_allowed

OWNED_BY_SIGNALBOX = "signalbox"


def model_list(snapshot: CatalogSnapshot | None, scopes: Sequence[str] | None) -> dict[str, Any]:
    """The OpenAI list object; an alias that shadows a catalog id is listed once, as an alias."""
    if snapshot is None:
        return {"object": "list", "data": []}
    owners: dict[str, str] = {}
    for model in snapshot.models:
        owners[model.id] = model.provider if model.HasField("provider") else OWNED_BY_SIGNALBOX
    for alias in snapshot.aliases:
        owners[alias] = OWNED_BY_SIGNALBOX
    data = [
        {"id": model_id, "object": "model", "created": snapshot.loaded_at, "owned_by": owner}
        for model_id, owner in sorted(owners.items())
        if model_allowed(scopes, model_id)
    ]
    return {"object": "list", "data": data}


router = APIRouter()


@router.get("/v1/models")
@router.get("/models")
async def list_models(request: Request) -> Response:
    runtime = request.app.state.runtime
    auth = await runtime.authenticator.authenticate(request.headers.get("authorization"))
    scopes = list(auth.key.scopes) if auth.key is not None else None
    missing = check_scopes(scopes, "models", None)
    if missing is not None:
        raise ApiError(403, "insufficient_scope", f"API key lacks scope {missing}")
    return json_response(model_list(await runtime.catalog.current(), scopes))
