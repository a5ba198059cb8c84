"""`POST /convert` (http-api §5): a Chat Completions body as the Responses body we would send.

No client auth and no upstream call: it shows the §1 translation. With
`include_internal_config=true` it also applies the operator's system prompt (api `responses`)
and the MCP tools (flat, with `source`/`groups`), which reveal internal config, so that needs
the admin token unless `SIGNALBOX_PUBLIC_CONVERT_INTERNAL_CONFIG` is set.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.edge.admin import require_admin
from services.edge.codec import translation_error
from services.edge.errors import invalid_request, json_response
from services.edge.proxy import parse_body, read_body
from services.edge.translate import TranslationError, chat_to_responses_request

router = APIRouter()

_TRUE = ("1", "true", "yes", "on")


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").strip().lower() in _TRUE


def convert_chat_body(
    body: dict[str, Any], *, conversation_id: str | None, previous_response_id: str | None
) -> dict[str, Any]:
    """§1 translation plus the query's state fields; `model` is kept as given."""
    if conversation_id and previous_response_id:
        raise invalid_request(
            "'conversation_id' and 'previous_response_id' cannot both be set", "conversation_id"
        )
    try:
        converted = chat_to_responses_request(body)
    except TranslationError as exc:
        raise translation_error(exc) from None
    if "model" in body:
        converted = {"model": body["model"], **converted}
    if conversation_id:
        converted["conversation"] = conversation_id
    if previous_response_id:
        converted["previous_response_id"] = previous_response_id
    return {k: v for k, v in converted.items() if v is not None}


@router.post("/convert")
async def convert(request: Request) -> Response:
    runtime = request.app.state.runtime
    settings = runtime.settings
    raw = await read_body(request, settings.max_body_bytes, settings.body_timeout_seconds)
    body = parse_body(raw, "chat")
    query = request.query_params
    converted = convert_chat_body(
        body,
        conversation_id=query.get("conversation_id") or None,
        previous_response_id=query.get("previous_response_id") or None,
    )
    if _flag(request, "include_internal_config"):
        if not runtime.settings.public_convert_internal_config:
            require_admin(request)
        converted = runtime.system_prompts.apply("responses", converted)
        mcp = getattr(runtime, "mcp", None)  # absent when the edge runs without the MCP feature
        if mcp is not None:
            converted = mcp.merge("responses", converted, internal=True)
    return json_response(converted)
