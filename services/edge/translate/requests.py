"""Request bodies: Chat Completions <-> Responses (conversion.md §0, §1, §2, §7).

Fields the other API does not know and the tables do not name are forwarded unchanged: they
are vendor extensions (vLLM `top_k`, ...) or newer OpenAI fields, and the upstream is the
right judge of them. Known fields without an equivalent are rejected (§7), never dropped
silently, unless they cannot change the output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from services.edge.translate.errors import TranslationError, invalid, unsupported

LOGPROBS_INCLUDE = "message.output_text.logprobs"
_TOOL_CHOICE_MODES = ("none", "auto", "required")
_FUNCTION_FIELDS = ("name", "description", "parameters", "strict")
_JSON_SCHEMA_FIELDS = ("name", "description", "schema", "strict")

# ---------------------------------------------------------------- shared helpers


def _expect_dict(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"'{param}' must be an object", param)
    return value


def _expect_list(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(f"'{param}' must be an array", param)
    return value


def _expect_str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"'{param}' must be a string", param)
    return value


def _pick(source: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {key: source[key] for key in keys if key in source}


def _reject_stateful_fields(body: dict[str, Any]) -> None:
    """conversion.md §6: /v1/chat/completions is stateless."""
    for field in ("previous_response_id", "conversation"):
        if body.get(field) is not None:
            raise TranslationError(
                f"'{field}' is not supported on /v1/chat/completions, which is stateless; "
                "use /v1/responses",
                field,
                "unsupported_parameter",
            )


# ---------------------------------------------------------------- §0 passthrough


def prepare_chat_passthrough(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Chat -> chat: ask the upstream for stream usage so every stream can be metered.

    Returns the body to send and whether the client itself asked for usage; when it did
    not, the edge removes the usage chunk before it reaches the client. Non-streaming
    responses always carry usage, so the answer is True for them.
    """
    _reject_stateful_fields(body)
    if not body.get("stream"):
        return dict(body), True
    options = body.get("stream_options")
    options = _expect_dict(options, "stream_options") if options is not None else {}
    wants_usage = bool(options.get("include_usage"))
    return {**body, "stream_options": {**options, "include_usage": True}}, wants_usage


def flatten_response_tools(body: dict[str, Any]) -> dict[str, Any]:
    """Responses -> responses: accept chat-style nested function tools, send them flat.

    Clients ported from Chat Completions often keep `{"type":"function","function":{...}}`;
    the Responses API rejects that shape, so it is fixed here rather than relayed as a 400.
    """
    out = dict(body)
    tools = body.get("tools")
    if isinstance(tools, list):
        out["tools"] = [_flat_function_tool(tool) for tool in tools]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        nested = choice.get("function")
        if isinstance(nested, dict) and "name" not in choice:
            out["tool_choice"] = {"type": "function", "name": nested.get("name")}
    return out


def _flat_function_tool(tool: Any) -> Any:
    if not (isinstance(tool, dict) and tool.get("type") == "function"):
        return tool
    nested = tool.get("function")
    if not isinstance(nested, dict):
        return tool
    return {"type": "function", **_pick(nested, _FUNCTION_FIELDS)}


# ---------------------------------------------------------------- §1 chat -> responses

_CHAT_DIRECTION = "responses"


def _chat_rejections(body: dict[str, Any]) -> None:
    """§7, chat -> responses: fields that change the output and have no equivalent."""
    checks: list[tuple[str, Callable[[Any], bool]]] = [
        ("n", lambda v: v is not None and v != 1),
        ("stop", lambda v: v not in (None, "", [])),
        ("seed", lambda v: v is not None),
        ("logit_bias", lambda v: bool(v)),
        ("frequency_penalty", lambda v: v not in (None, 0)),
        ("presence_penalty", lambda v: v not in (None, 0)),
        ("audio", lambda v: v is not None),
        ("modalities", lambda v: v not in (None, ["text"])),
        ("prediction", lambda v: v is not None),
        ("web_search_options", lambda v: v is not None),
        ("functions", lambda v: v is not None),
        ("function_call", lambda v: v is not None),
    ]
    for field, is_set in checks:
        if field in body and is_set(body[field]):
            raise unsupported(field, field, _CHAT_DIRECTION)


# Chat-only fields that cannot change the output once §7 has passed, or that are folded
# into another field below.
_CHAT_CONSUMED = frozenset(
    {
        "messages",
        "max_completion_tokens",
        "max_tokens",
        "store",
        "stream_options",
        "response_format",
        "verbosity",
        "tools",
        "tool_choice",
        "reasoning_effort",
        "logprobs",
        "n",
        "modalities",
        "stop",
        "seed",
        "logit_bias",
        "frequency_penalty",
        "presence_penalty",
        "audio",
        "prediction",
        "web_search_options",
        "functions",
        "function_call",
    }
)


def chat_to_responses_request(body: dict[str, Any]) -> dict[str, Any]:
    """A Chat Completions request as the equivalent Responses request (§1)."""
    _expect_dict(body, "body")
    _reject_stateful_fields(body)
    _chat_rejections(body)
    out: dict[str, Any] = {key: value for key, value in body.items() if key not in _CHAT_CONSUMED}
    out["input"] = _chat_messages_to_input(body.get("messages"))

    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        out["max_output_tokens"] = max_tokens
    out["store"] = body["store"] if body.get("store") is not None else False

    text = _chat_text_config(body)
    if text:
        out["text"] = text
    if body.get("tools") is not None:
        tools = _expect_list(body["tools"], "tools")
        out["tools"] = [
            _chat_tool_to_responses(tool, f"tools[{i}]") for i, tool in enumerate(tools)
        ]
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _chat_tool_choice_to_responses(body["tool_choice"])
    if body.get("reasoning_effort") is not None:
        out["reasoning"] = {"effort": body["reasoning_effort"]}
    if body.get("logprobs"):
        out["include"] = [LOGPROBS_INCLUDE]
    return out


def _chat_text_config(body: dict[str, Any]) -> dict[str, Any]:
    text: dict[str, Any] = {}
    if body.get("response_format") is not None:
        text["format"] = _chat_response_format(
            _expect_dict(body["response_format"], "response_format")
        )
    if body.get("verbosity") is not None:
        text["verbosity"] = body["verbosity"]
    return text


def _chat_response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        schema = _expect_dict(fmt.get("json_schema"), "response_format.json_schema")
        return {"type": "json_schema", **_pick(schema, _JSON_SCHEMA_FIELDS)}
    raise unsupported(f"response_format.type={kind}", "response_format.type", _CHAT_DIRECTION)


def _chat_tool_to_responses(tool: Any, param: str) -> dict[str, Any]:
    tool = _expect_dict(tool, param)
    if tool.get("type") != "function":
        raise TranslationError(
            f"tool type '{tool.get('type')}' cannot be translated for a responses-mode upstream",
            param,
            "unsupported_tool_type",
        )
    function = _expect_dict(tool.get("function"), f"{param}.function")
    _expect_str(function.get("name"), f"{param}.function.name")
    # Responses requires `parameters` and `strict`, and its functions are strict unless told
    # otherwise; chat's are not, so an absent `strict` is sent as false to keep chat's meaning.
    return {
        "type": "function",
        "parameters": None,
        "strict": False,
        **_pick(function, _FUNCTION_FIELDS),
    }


def _chat_tool_choice_to_responses(choice: Any) -> Any:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_MODES:
            raise invalid(f"unknown tool_choice '{choice}'", "tool_choice")
        return choice
    choice = _expect_dict(choice, "tool_choice")
    kind = choice.get("type")
    if kind == "function":
        function = _expect_dict(choice.get("function"), "tool_choice.function")
        return {"type": "function", "name": function.get("name")}
    if kind == "allowed_tools":
        allowed = _expect_dict(choice.get("allowed_tools"), "tool_choice.allowed_tools")
        tools = _expect_list(allowed.get("tools"), "tool_choice.allowed_tools.tools")
        flat = []
        for k, tool in enumerate(tools):
            param = f"tool_choice.allowed_tools.tools[{k}]"
            tool = _expect_dict(tool, param)
            if tool.get("type") != "function":
                raise TranslationError(
                    f"tool type '{tool.get('type')}' cannot be translated",
                    param,
                    "unsupported_tool_type",
                )
            function = _expect_dict(tool.get("function"), f"{param}.function")
            flat.append({"type": "function", "name": function.get("name")})
        return {"type": "allowed_tools", "mode": allowed.get("mode"), "tools": flat}
    raise TranslationError(
        f"tool_choice type '{kind}' cannot be translated for a responses-mode upstream",
        "tool_choice",
        "unsupported_tool_type",
    )


def _chat_messages_to_input(messages: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for i, message in enumerate(_expect_list(messages, "messages")):
        items.extend(
            _chat_message_to_items(_expect_dict(message, f"messages[{i}]"), f"messages[{i}]")
        )
    return items


def _chat_message_to_items(message: dict[str, Any], path: str) -> list[dict[str, Any]]:
    role = message.get("role")
    if role in ("system", "developer"):
        content = _map_parts(
            message.get("content"), f"{path}.content", _text_part("text", "input_text")
        )
        return [{"type": "message", "role": role, "content": content}]
    if role == "user":
        content = _map_parts(message.get("content"), f"{path}.content", _chat_user_part)
        return [{"type": "message", "role": "user", "content": content}]
    if role == "assistant":
        return _chat_assistant_to_items(message, path)
    if role == "tool":
        output = _joined_text(message.get("content"), f"{path}.content", allow_refusal=False)
        call_id = _expect_str(message.get("tool_call_id"), f"{path}.tool_call_id")
        return [{"type": "function_call_output", "call_id": call_id, "output": output}]
    if role == "function":
        raise unsupported("role function", f"{path}.role", _CHAT_DIRECTION)
    raise invalid(f"unknown message role '{role}'", f"{path}.role")


def _map_parts(
    content: Any, path: str, convert: Callable[[dict[str, Any], str], dict[str, Any]]
) -> str | list[dict[str, Any]]:
    """A string stays a string; each part of a list goes through `convert(part, path)`."""
    if isinstance(content, str):
        return content
    return [
        convert(_expect_dict(part, f"{path}[{j}]"), f"{path}[{j}]")
        for j, part in enumerate(_expect_list(content, path))
    ]


def _text_part(source_type: str, target_type: str) -> Callable[[dict[str, Any], str], dict]:
    """System/developer content: text parts only, renamed to the other dialect's text type."""

    def convert(part: dict[str, Any], path: str) -> dict[str, Any]:
        if part.get("type") != source_type:
            raise _unsupported_content(part.get("type"), path)
        return {"type": target_type, "text": _expect_str(part.get("text"), f"{path}.text")}

    return convert


def _chat_user_part(part: dict[str, Any], path: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": "input_text", "text": _expect_str(part.get("text"), f"{path}.text")}
    if kind == "image_url":
        image = part.get("image_url")
        if isinstance(image, str):  # a common client shortcut for {"url": ...}
            image = {"url": image}
        image = _expect_dict(image, f"{path}.image_url")
        url = _expect_str(image.get("url"), f"{path}.image_url.url")
        return {"type": "input_image", "image_url": url, "detail": image.get("detail") or "auto"}
    if kind == "file":
        file = _expect_dict(part.get("file"), f"{path}.file")
        if "file_id" not in file and "file_data" not in file:
            raise invalid("a file part needs 'file_id' or 'file_data'", f"{path}.file")
        return {"type": "input_file", **_pick(file, ("file_id", "file_data", "filename"))}
    raise _unsupported_content(kind, path)


def _unsupported_content(kind: Any, path: str) -> TranslationError:
    return TranslationError(
        f"content part type '{kind}' cannot be translated", path, "unsupported_content_type"
    )


def _joined_text(content: Any, path: str, *, allow_refusal: bool) -> str:
    """Text parts joined in order; a string is returned as is."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(_expect_list(content, path)):
        part = _expect_dict(part, f"{path}[{j}]")
        if part.get("type") == "text":
            texts.append(_expect_str(part.get("text"), f"{path}[{j}].text"))
        elif not (allow_refusal and part.get("type") == "refusal"):
            raise _unsupported_content(part.get("type"), f"{path}[{j}]")
    return "".join(texts)


def _chat_assistant_to_items(message: dict[str, Any], path: str) -> list[dict[str, Any]]:
    for field in ("audio", "function_call"):
        if message.get(field) is not None:
            raise unsupported(field, f"{path}.{field}", _CHAT_DIRECTION)
    content = message.get("content")
    text = _joined_text(content, f"{path}.content", allow_refusal=True)
    refusals = [message["refusal"]] if message.get("refusal") else []
    if isinstance(content, list):
        refusals += [
            p["refusal"] for p in content if p.get("type") == "refusal" and p.get("refusal")
        ]
    items: list[dict[str, Any]] = []
    if refusals:
        parts = [{"type": "output_text", "text": text}] if text else []
        parts.append({"type": "refusal", "refusal": "".join(refusals)})
        items.append({"type": "message", "role": "assistant", "content": parts})
    elif text:
        items.append({"type": "message", "role": "assistant", "content": text})
    for k, call in enumerate(_expect_list(message.get("tool_calls") or [], f"{path}.tool_calls")):
        items.append(
            _chat_tool_call_to_item(
                _expect_dict(call, f"{path}.tool_calls[{k}]"), f"{path}.tool_calls[{k}]"
            )
        )
    return items


def _chat_tool_call_to_item(call: dict[str, Any], path: str) -> dict[str, Any]:
    if call.get("type", "function") != "function":
        raise TranslationError(
            f"tool call type '{call.get('type')}' cannot be translated",
            path,
            "unsupported_tool_type",
        )
    function = _expect_dict(call.get("function"), f"{path}.function")
    return {
        "type": "function_call",
        "call_id": _expect_str(call.get("id"), f"{path}.id"),
        "name": _expect_str(function.get("name"), f"{path}.function.name"),
        "arguments": function.get("arguments") or "",
    }


# ---------------------------------------------------------------- §2 responses -> chat

_RESPONSES_DIRECTION = "chat"
_HOSTED_TOOL_HINT = "hosted tools run inside OpenAI's Responses API and have no chat equivalent"

_RESPONSES_CONSUMED = frozenset(
    {
        "input",
        "instructions",
        "max_output_tokens",
        "text",
        "reasoning",
        "tools",
        "tool_choice",
        "include",
        "stream",
        "stream_options",
        "store",
        "previous_response_id",
        "conversation",
        "background",
        "truncation",
        "max_tool_calls",
        "prompt",
    }
)


def _responses_rejections(body: dict[str, Any]) -> None:
    """§7, responses -> chat."""
    checks: list[tuple[str, Callable[[Any], bool]]] = [
        ("background", lambda v: bool(v)),
        ("truncation", lambda v: v == "auto"),
        ("max_tool_calls", lambda v: v is not None),
        ("prompt", lambda v: v is not None),
    ]
    for field, is_set in checks:
        if field in body and is_set(body[field]):
            raise unsupported(field, field, _RESPONSES_DIRECTION)


def responses_to_chat_request(
    body: dict[str, Any], *, history: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A Responses request as the equivalent Chat Completions request (§2).

    `history` holds the expanded items of earlier turns (§6: stored input + output, or a
    Signalbox-managed conversation); they precede the new input. Their instructions are
    not carried over, so only this body's `instructions` become the system message.
    """
    _expect_dict(body, "body")
    _responses_rejections(body)
    out: dict[str, Any] = {
        key: value for key, value in body.items() if key not in _RESPONSES_CONSUMED
    }
    messages: list[dict[str, Any]] = []
    if body.get("instructions") is not None:
        messages.append(
            {"role": "system", "content": _expect_str(body["instructions"], "instructions")}
        )
    builder = _ChatMessageBuilder(messages)
    for item in history or []:
        builder.add(item, "previous_response_id")
    user_input = body.get("input")
    if isinstance(user_input, str):
        messages.append({"role": "user", "content": user_input})
    elif user_input is not None:
        builder.reset()
        for i, item in enumerate(_expect_list(user_input, "input")):
            builder.add(item, f"input[{i}]")
    out["messages"] = messages

    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    if body.get("text") is not None:
        out.update(_responses_text_config(_expect_dict(body["text"], "text")))
    reasoning = body.get("reasoning")
    if reasoning is not None and _expect_dict(reasoning, "reasoning").get("effort") is not None:
        out["reasoning_effort"] = reasoning["effort"]
    if body.get("tools") is not None:
        tools = _expect_list(body["tools"], "tools")
        out["tools"] = [
            _responses_tool_to_chat(tool, f"tools[{i}]") for i, tool in enumerate(tools)
        ]
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _responses_tool_choice_to_chat(body["tool_choice"])
    if body.get("include") is not None and LOGPROBS_INCLUDE in _expect_list(
        body["include"], "include"
    ):
        out["logprobs"] = True
    if body.get("stream") is not None:
        out["stream"] = bool(body["stream"])
        if body["stream"]:
            out["stream_options"] = {"include_usage": True}
    return out


def _responses_text_config(text: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fmt = text.get("format")
    if fmt is not None:
        fmt = _expect_dict(fmt, "text.format")
        kind = fmt.get("type")
        if kind in ("text", "json_object"):
            out["response_format"] = {"type": kind}
        elif kind == "json_schema":
            out["response_format"] = {
                "type": "json_schema",
                "json_schema": _pick(fmt, _JSON_SCHEMA_FIELDS),
            }
        else:
            raise unsupported(f"text.format.type={kind}", "text.format.type", _RESPONSES_DIRECTION)
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    return out


def _hosted_tool_error(kind: Any, param: str) -> TranslationError:
    return TranslationError(
        f"tool type '{kind}' cannot be translated for a chat-mode upstream ({_HOSTED_TOOL_HINT})",
        param,
        "unsupported_tool_type",
    )


def _responses_tool_to_chat(tool: Any, param: str) -> dict[str, Any]:
    tool = _expect_dict(tool, param)
    if tool.get("type") != "function":
        raise _hosted_tool_error(tool.get("type"), param)
    nested = tool.get("function")
    source = _expect_dict(nested, f"{param}.function") if nested is not None else tool
    _expect_str(source.get("name"), f"{param}.name")
    # Responses spells "no parameters" / "default strictness" as null; chat omits the key.
    function = {key: source[key] for key in _FUNCTION_FIELDS if source.get(key) is not None}
    return {"type": "function", "function": function}


def _responses_tool_choice_to_chat(choice: Any) -> Any:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_MODES:
            raise invalid(f"unknown tool_choice '{choice}'", "tool_choice")
        return choice
    choice = _expect_dict(choice, "tool_choice")
    kind = choice.get("type")
    if kind == "function":
        return {"type": "function", "function": {"name": _function_name(choice, "tool_choice")}}
    if kind == "allowed_tools":
        tools = []
        for k, tool in enumerate(_expect_list(choice.get("tools"), "tool_choice.tools")):
            param = f"tool_choice.tools[{k}]"
            tool = _expect_dict(tool, param)
            if tool.get("type") != "function":
                raise _hosted_tool_error(tool.get("type"), param)
            tools.append({"type": "function", "function": {"name": _function_name(tool, param)}})
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": choice.get("mode"), "tools": tools},
        }
    raise _hosted_tool_error(kind, "tool_choice")


def _function_name(obj: dict[str, Any], param: str) -> str:
    """The name of a flat (`name`) or chat-style nested (`function.name`) function reference."""
    if "name" in obj:
        return _expect_str(obj["name"], f"{param}.name")
    nested = _expect_dict(obj.get("function"), f"{param}.function")
    return _expect_str(nested.get("name"), f"{param}.function.name")


class _ChatMessageBuilder:
    """Appends chat messages for Responses items, grouping consecutive function calls.

    Consecutive `function_call` items become one assistant message; assistant text that
    immediately precedes them becomes that message's `content` (§2).
    """

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self._messages = messages
        self._assistant: dict[str, Any] | None = None  # where the next function_call goes

    def reset(self) -> None:
        """History and new input are separate turns: never group across them."""
        self._assistant = None

    def add(self, item: Any, path: str) -> None:
        item = _expect_dict(item, path)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            self._add_message(item, path)
        elif kind == "function_call":
            self._add_function_call(item, path)
        elif kind == "function_call_output":
            self._assistant = None
            call_id = _expect_str(item.get("call_id"), f"{path}.call_id")
            output = _function_output_text(item.get("output"), f"{path}.output")
            self._messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind == "reasoning":
            return  # dropped (§2); it does not break a run of function calls either
        else:
            raise unsupported(f"input item type {kind}", path, _RESPONSES_DIRECTION)

    def _add_message(self, item: dict[str, Any], path: str) -> None:
        role = item.get("role")
        content = item.get("content")
        if role == "assistant":
            self._assistant = _assistant_message(content, f"{path}.content")
            self._messages.append(self._assistant)
            return
        self._assistant = None
        if role in ("system", "developer"):
            self._messages.append(
                {
                    "role": "system",
                    "content": _map_parts(
                        content, f"{path}.content", _text_part("input_text", "text")
                    ),
                }
            )
        elif role == "user":
            self._messages.append(
                {"role": "user", "content": _map_parts(content, f"{path}.content", _user_part)}
            )
        else:
            raise invalid(f"unknown message role '{role}'", f"{path}.role")

    def _add_function_call(self, item: dict[str, Any], path: str) -> None:
        call = {
            "id": _expect_str(item.get("call_id"), f"{path}.call_id"),
            "type": "function",
            "function": {
                "name": _expect_str(item.get("name"), f"{path}.name"),
                "arguments": item.get("arguments") or "",
            },
        }
        if self._assistant is None:
            self._assistant = {"role": "assistant", "content": None}
            self._messages.append(self._assistant)
        self._assistant.setdefault("tool_calls", []).append(call)


def _assistant_message(content: Any, path: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts, refusals = [], []
    for j, part in enumerate(_expect_list(content, path)):
        part = _expect_dict(part, f"{path}[{j}]")
        kind = part.get("type")
        if kind in ("output_text", "input_text"):
            texts.append(_expect_str(part.get("text"), f"{path}[{j}].text"))
        elif kind == "refusal":
            refusals.append(_expect_str(part.get("refusal"), f"{path}[{j}].refusal"))
        else:
            raise _unsupported_content(kind, f"{path}[{j}]")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if refusals:
        message["refusal"] = "".join(refusals)
    return message


def _user_part(part: dict[str, Any], path: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "input_text":
        return {"type": "text", "text": _expect_str(part.get("text"), f"{path}.text")}
    if kind == "input_image":
        if not part.get("image_url"):
            raise TranslationError(
                "an input_image given only by file_id cannot be translated for a chat-mode "
                "upstream; send its image_url (a URL or a data: URL)",
                path,
                "unsupported_content_type",
            )
        image = {"url": _expect_str(part["image_url"], f"{path}.image_url")}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if part.get("file_url") is not None or not ("file_id" in part or "file_data" in part):
            raise TranslationError(
                "an input_file must be given by file_id or file_data for a chat-mode upstream",
                path,
                "unsupported_content_type",
            )
        return {"type": "file", "file": _pick(part, ("file_id", "file_data", "filename"))}
    raise _unsupported_content(kind, path)


def _function_output_text(output: Any, path: str) -> str:
    if isinstance(output, str):
        return output
    texts = []
    for j, part in enumerate(_expect_list(output, path)):
        part = _expect_dict(part, f"{path}[{j}]")
        if part.get("type") != "input_text":
            raise _unsupported_content(part.get("type"), f"{path}[{j}]")
        texts.append(_expect_str(part.get("text"), f"{path}[{j}].text"))
    return "".join(texts)
