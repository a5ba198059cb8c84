"""Chat Completions <-> Responses translation (conversion.md), as pure functions with no I/O.

The edge decides *when* to translate (by the plan's `upstream.mode`); this package only knows
*how*: request bodies, non-streaming responses, streams and the SSE wire format.
"""

from services.edge.translate.errors import TranslationError
from services.edge.translate.requests import (
    chat_to_responses_request,
    flatten_response_tools,
    prepare_chat_passthrough,
    responses_to_chat_request,
)
from services.edge.translate.responses import (
    chat_completion_to_response,
    responses_to_chat_completion,
    usage_chat_to_responses,
    usage_responses_to_chat,
)
from services.edge.translate.sse import (
    DONE,
    SSEEvent,
    SSEParser,
    SSEProtocolError,
    decode_data,
    encode_chat_chunk,
    encode_comment,
    encode_done,
    encode_response_event,
)
from services.edge.translate.streams import ChatToResponsesStream, ResponsesToChatStream

__all__ = [
    "DONE",
    "ChatToResponsesStream",
    "ResponsesToChatStream",
    "SSEEvent",
    "SSEParser",
    "SSEProtocolError",
    "TranslationError",
    "chat_completion_to_response",
    "chat_to_responses_request",
    "decode_data",
    "encode_chat_chunk",
    "encode_comment",
    "encode_done",
    "encode_response_event",
    "flatten_response_tools",
    "prepare_chat_passthrough",
    "responses_to_chat_completion",
    "responses_to_chat_request",
    "usage_chat_to_responses",
    "usage_responses_to_chat",
]
