"""Ground truth for wire shapes: the official `openai` SDK types, plus the golden fixtures."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming
from pydantic import BaseModel, TypeAdapter

FIXTURES = Path(__file__).parent / "fixtures"

EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
_EVENT_CLASSES: dict[str, type[BaseModel]] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}
# The streaming variants accept every field; `stream` is forced so both variants fit.
_CHAT_REQUEST = TypeAdapter(CompletionCreateParamsStreaming)
_RESPONSES_REQUEST = TypeAdapter(ResponseCreateParamsStreaming)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _materialize(value: Any) -> Any:
    """TypedDict `Iterable` fields validate lazily; walk them so every item is checked."""
    if isinstance(value, dict):
        return {key: _materialize(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_materialize(inner) for inner in value]
    if isinstance(value, Iterator):
        return [_materialize(inner) for inner in value]
    return value


def validate_chat_request(body: dict[str, Any]) -> None:
    _materialize(_CHAT_REQUEST.validate_python({**body, "stream": True}))


def validate_responses_request(body: dict[str, Any]) -> None:
    _materialize(_RESPONSES_REQUEST.validate_python({**body, "stream": True}))


def validate_chat_completion(body: dict[str, Any]) -> ChatCompletion:
    return ChatCompletion.model_validate(body)


def validate_chat_chunk(chunk: dict[str, Any]) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(chunk)


def validate_response(body: dict[str, Any]) -> Response:
    return Response.model_validate(body)


def validate_event(event: dict[str, Any]) -> Any:
    """Through the typed union, after the exact class (whose errors are readable)."""
    _EVENT_CLASSES[event["type"]].model_validate(event)
    parsed = EVENT_ADAPTER.validate_python(event)
    assert parsed.type == event["type"]
    return parsed
