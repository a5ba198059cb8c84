"""Non-streaming response bodies: Responses <-> Chat Completions (conversion.md §3, §4, §5.4).

The pieces shared with the stream converters (usage, logprob entries, finish_reason <->
status, the echoed response envelope) live here so both paths give the same answer.
"""

from __future__ import annotations

from typing import Any

from services.edge.translate.errors import TranslationError
from services.edge.translate.ids import new_id
from services.edge.translate.requests import flatten_response_tools

REASONING_SEPARATOR = "\n\n"

# The `error.code` values the Responses API defines; anything else is reported as
# `server_error` so SDK clients can still parse the failed response.
RESPONSE_ERROR_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "data_residency_mismatch",
        "bio_policy",
        "misalignment_policy_violation",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)

# ---------------------------------------------------------------- §5.4 usage and status


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _details(usage: dict[str, Any], key: str) -> dict[str, Any]:
    details = usage.get(key)
    return details if isinstance(details, dict) else {}


def usage_chat_to_responses(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Chat `usage` as Responses `usage`; missing values become 0 (§5.4)."""
    usage = usage or {}
    prompt = _details(usage, "prompt_tokens_details")
    completion = _details(usage, "completion_tokens_details")
    return {
        "input_tokens": _int(usage.get("prompt_tokens")),
        "input_tokens_details": {
            "cached_tokens": _int(prompt.get("cached_tokens")),
            "cache_write_tokens": _int(prompt.get("cache_write_tokens")),
        },
        "output_tokens": _int(usage.get("completion_tokens")),
        "output_tokens_details": {"reasoning_tokens": _int(completion.get("reasoning_tokens"))},
        "total_tokens": _int(usage.get("total_tokens")),
    }


def usage_responses_to_chat(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Responses `usage` as Chat `usage`; missing values become 0 (§5.4)."""
    usage = usage or {}
    inputs = _details(usage, "input_tokens_details")
    outputs = _details(usage, "output_tokens_details")
    return {
        "prompt_tokens": _int(usage.get("input_tokens")),
        "completion_tokens": _int(usage.get("output_tokens")),
        "total_tokens": _int(usage.get("total_tokens")),
        "prompt_tokens_details": {
            "cached_tokens": _int(inputs.get("cached_tokens")),
            "cache_write_tokens": _int(inputs.get("cache_write_tokens")),
        },
        "completion_tokens_details": {"reasoning_tokens": _int(outputs.get("reasoning_tokens"))},
    }


def status_for_finish_reason(finish_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    """Chat `finish_reason` -> Responses `status`, `incomplete_details` (§5.4)."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def finish_reason_for_status(
    status: str, incomplete_details: dict[str, Any] | None, has_tool_calls: bool
) -> str:
    """Responses `status` -> chat `finish_reason` (§5.4)."""
    if status == "incomplete":
        reason = (incomplete_details or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if has_tool_calls else "stop"


def response_error_code(code: Any) -> str:
    return code if code in RESPONSE_ERROR_CODES else "server_error"


# ---------------------------------------------------------------- logprob entries


def logprob_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """One token logprob in the shape both APIs share: `{token, logprob, bytes, top_logprobs}`.

    Responses stream events omit `bytes`; they are the token's UTF-8 bytes, as in OpenAI's
    own chat output, so they are filled in rather than left null.
    """
    out = _top_logprob(entry)
    out["top_logprobs"] = [_top_logprob(top) for top in entry.get("top_logprobs") or []]
    return out


def _top_logprob(entry: dict[str, Any]) -> dict[str, Any]:
    token = entry.get("token") or ""
    raw_bytes = entry.get("bytes")
    return {
        "token": token,
        "logprob": entry.get("logprob", 0.0),
        "bytes": raw_bytes if raw_bytes is not None else list(token.encode("utf-8")),
    }


# ---------------------------------------------------------------- §3 responses -> chat


def responses_to_chat_completion(resp: dict[str, Any]) -> dict[str, Any]:
    """A Responses `response` object as a `chat.completion` (§3)."""
    status = resp.get("status") or "completed"
    if status == "failed":
        error = resp.get("error") or {}
        raise TranslationError(
            error.get("message") or "the upstream response failed", None, "upstream_error", 502
        )
    if status not in ("completed", "incomplete"):
        raise TranslationError(
            f"the upstream returned a response with status '{status}'",
            None,
            "upstream_invalid_response",
            502,
        )
    message, logprobs = _chat_message_from_output(resp.get("output") or [])
    finish_reason = finish_reason_for_status(
        status, resp.get("incomplete_details"), bool(message.get("tool_calls"))
    )
    usage = resp.get("usage")
    return {
        "id": chat_id_for(resp.get("id")),
        "object": "chat.completion",
        "created": int(resp.get("created_at") or 0),
        "model": resp.get("model"),
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}
        ],
        "usage": usage_responses_to_chat(usage) if usage is not None else None,
    }


def chat_id_for(response_id: Any) -> str:
    """`chatcmpl-` + the response id without `resp_` (§3)."""
    if not isinstance(response_id, str) or not response_id:
        return new_id("chatcmpl-")
    return "chatcmpl-" + response_id.removeprefix("resp_")


def _chat_message_from_output(
    output: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    texts: list[str] = []
    refusals: list[str] = []
    annotations: list[dict[str, Any]] = []
    logprobs: list[dict[str, Any]] = []
    reasoning: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    offset = 0  # annotation indices are relative to their part; ours to the joined text
    for item in output:
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    text = part.get("text") or ""
                    annotations += _chat_annotations(part.get("annotations") or [], offset)
                    logprobs += [logprob_entry(e) for e in part.get("logprobs") or []]
                    texts.append(text)
                    offset += len(text)
                elif part.get("type") == "refusal":
                    refusals.append(part.get("refusal") or "")
        elif kind == "function_call":
            tool_calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {
                        "name": item.get("name"),
                        "arguments": item.get("arguments") or "",
                    },
                }
            )
        elif kind == "reasoning":
            reasoning += [s.get("text") or "" for s in item.get("summary") or []]
            reasoning += [c.get("text") or "" for c in item.get("content") or []]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": "".join(refusals) if refusals else None,
        "annotations": annotations,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    reasoning = [text for text in reasoning if text]
    if reasoning:
        message["reasoning_content"] = REASONING_SEPARATOR.join(reasoning)
    choice_logprobs = {"content": logprobs, "refusal": None} if logprobs else None
    return message, choice_logprobs


def _chat_annotations(annotations: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    """Only `url_citation` exists in chat; file citations have no chat form and are dropped."""
    return [
        {
            "type": "url_citation",
            "url_citation": {
                "url": a.get("url"),
                "title": a.get("title"),
                "start_index": (a.get("start_index") or 0) + offset,
                "end_index": (a.get("end_index") or 0) + offset,
            },
        }
        for a in annotations
        if a.get("type") == "url_citation"
    ]


# ---------------------------------------------------------------- §4 chat -> responses


def response_envelope(request: dict[str, Any], *, created_at: int, model: Any) -> dict[str, Any]:
    """The response object around `output`, echoing the client's request fields (§4).

    Defaults are the ones OpenAI itself echoes, so SDKs that read e.g. `tools` or
    `parallel_tool_calls` without a None check keep working.
    """
    echoed = flatten_response_tools(request)
    return {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": echoed.get("instructions"),
        "max_output_tokens": echoed.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": echoed.get("parallel_tool_calls", True),
        "previous_response_id": echoed.get("previous_response_id"),
        "reasoning": echoed.get("reasoning") or {"effort": None, "summary": None},
        "store": echoed.get("store", True),
        "temperature": echoed.get("temperature"),
        "text": echoed.get("text") or {"format": {"type": "text"}},
        "tool_choice": echoed.get("tool_choice") or "auto",
        "tools": echoed.get("tools") or [],
        "top_p": echoed.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": echoed.get("user"),
        "metadata": echoed.get("metadata") or {},
    }


def responses_annotations(annotations: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Chat `url_citation` annotations in the flat Responses form."""
    out = []
    for annotation in annotations or []:
        citation = annotation.get("url_citation") or {}
        out.append({"type": "url_citation", **citation})
    return out


def reasoning_item(text: str, *, item_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": item_id or new_id("rs_"),
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def function_call_item(
    call_id: str, name: str, arguments: str, *, item_id: str | None = None
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id or new_id("fc_"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def reasoning_text(obj: dict[str, Any]) -> str | None:
    """The reasoning of a chat message or delta: `reasoning_content`, or vLLM's `reasoning`."""
    text = obj.get("reasoning_content")
    return text if text is not None else obj.get("reasoning")


def chat_completion_to_response(chat: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A `chat.completion` as a Responses `response`, echoing `request` (the client's body) (§4)."""
    choices = chat.get("choices") or []
    choice = choices[0] if choices else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []

    thoughts = reasoning_text(message)
    if thoughts:
        output.append(reasoning_item(thoughts))
    content, refusal = message.get("content"), message.get("refusal")
    tool_calls = message.get("tool_calls") or []
    if content or refusal or not tool_calls:
        parts: list[dict[str, Any]] = []
        if content or not refusal:
            logprobs = (choice.get("logprobs") or {}).get("content") or []
            parts.append(
                {
                    "type": "output_text",
                    "text": content or "",
                    "annotations": responses_annotations(message.get("annotations")),
                    "logprobs": [logprob_entry(entry) for entry in logprobs],
                }
            )
        if refusal:
            parts.append({"type": "refusal", "refusal": refusal})
        output.append(
            {
                "type": "message",
                "id": new_id("msg_"),
                "status": "completed",
                "role": "assistant",
                "content": parts,
            }
        )
    for call in tool_calls:
        function = call.get("function") or {}
        output.append(
            function_call_item(
                call.get("id"), function.get("name"), function.get("arguments") or ""
            )
        )

    response = response_envelope(
        request, created_at=chat.get("created") or 0, model=chat.get("model")
    )
    status, incomplete = status_for_finish_reason(choice.get("finish_reason"))
    usage = chat.get("usage")
    response.update(
        status=status,
        incomplete_details=incomplete,
        output=output,
        usage=usage_chat_to_responses(usage) if usage is not None else None,
    )
    return response
