"""The edge's inference surface as OpenAPI 3.1, built from the official SDK's request types.

Fuzzing against the SDK's own `CompletionCreateParams` / `ResponseCreateParams` means the
generated bodies are the ones real clients can send, not a private simplified schema.
"""

from __future__ import annotations

from typing import Any

from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from openai.types.responses.response_create_params import ResponseCreateParamsBase
from pydantic import TypeAdapter

REF_TEMPLATE = "#/components/schemas/{model}"
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": ["string", "null"]},
                "param": {"type": ["string", "null"]},
            },
        }
    },
}


def _operation(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "security": [{"bearer": []}],
        "responses": {
            "200": {"description": "The completion (JSON or text/event-stream)"},
            "default": {
                "description": "An OpenAI-style error",
                "content": {"application/json": {"schema": ERROR_SCHEMA}},
            },
        },
    }


def edge_openapi() -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for path, params in (
        ("/v1/chat/completions", CompletionCreateParamsBase),
        ("/v1/responses", ResponseCreateParamsBase),
    ):
        schema = TypeAdapter(params).json_schema(ref_template=REF_TEMPLATE)
        components.update(schema.pop("$defs", {}))
        paths[path] = {"post": _operation(schema)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Signalbox edge (inference)", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
