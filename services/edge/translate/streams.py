"""Stream converters (conversion.md §5.1, §5.2, §5.3).

Each converter is a small state machine with pure methods: `feed` one parsed upstream
event or chunk and get back what to send to the client; `fail` on a read error; `finish`
at EOF. Nothing here touches a socket, so the edge owns timing, keep-alives and cancel:

    parser, stream = SSEParser(), ChatToResponsesStream(client_body)
    async for raw in upstream.aiter_raw():
        for event in parser.feed(raw):
            for out in stream.feed(decode_data(event)):
                yield encode_response_event(out)
    for out in stream.finish():          # or stream.fail(message) on a read error
        yield encode_response_event(out)
    meter(stream.usage)

`ResponsesToChatStream` is used the same way, encoding each output with
`encode_chat_chunk`, or `encode_done()` for `DONE`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from services.edge.translate.ids import new_id
from services.edge.translate.responses import (
    REASONING_SEPARATOR,
    chat_id_for,
    finish_reason_for_status,
    function_call_item,
    logprob_entry,
    reasoning_item,
    reasoning_text,
    response_envelope,
    response_error_code,
    status_for_finish_reason,
    usage_chat_to_responses,
    usage_responses_to_chat,
)
from services.edge.translate.sse import DONE

STREAM_ERROR_CODE = "upstream_stream_error"
EOF_MESSAGE = "the upstream stream ended before the response was complete"

ChatOutput = dict[str, Any] | str  # a chunk or error frame, or DONE


# ---------------------------------------------------------------- §5.1 responses -> chat


class ResponsesToChatStream:
    """Responses stream events in, chat chunks out (ending with `DONE`).

    `usage` is the final usage in chat form once the upstream reported it.
    """

    def __init__(self, model: str, include_usage: bool) -> None:
        self._model = model
        self._include_usage = include_usage
        self._id: str | None = None
        self._created = 0
        self._tool_by_item: dict[Any, int] = {}  # function_call item id -> chat tool index
        self._tool_by_output: dict[Any, int] = {}  # its output_index -> chat tool index
        self._reasoning_part: tuple[Any, ...] | None = None
        self._done = False
        self.usage: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: dict[str, Any]) -> list[ChatOutput]:
        if self._done:
            return []
        kind = event.get("type")
        if kind == "response.created":
            self._start(event.get("response") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind in ("response.completed", "response.incomplete"):
            return self._complete(event.get("response") or {})
        if kind == "response.failed":
            response = event.get("response") or {}
            if response.get("usage"):  # tokens spent before the failure are still metered
                self.usage = usage_responses_to_chat(response["usage"])
            error = response.get("error") or {}
            message = error.get("message") or "the upstream response failed"
            return self.fail(message, error.get("code"))
        if kind == "error":
            return self.fail(event.get("message") or "upstream stream error", event.get("code"))
        handler = _RESPONSES_DELTA_HANDLERS.get(kind)
        return handler(self, event) if handler else []

    def fail(self, message: str, code: str | None = None) -> list[ChatOutput]:
        """End with the §5.3 error frame and `[DONE]` (upstream error, read error, ...)."""
        if self._done:
            return []
        self._done = True
        error = {
            "message": message,
            "type": "server_error",
            "param": None,
            "code": code or STREAM_ERROR_CODE,
        }
        return [{"error": error}, DONE]

    def finish(self) -> list[ChatOutput]:
        """EOF from the upstream: without a terminal event, the stream broke."""
        return self.fail(EOF_MESSAGE)

    # -- event handlers

    def _start(self, response: dict[str, Any]) -> None:
        self._id = chat_id_for(response.get("id"))
        self._created = int(response.get("created_at") or time.time())

    def _on_text(self, event: dict[str, Any]) -> list[ChatOutput]:
        entries = event.get("logprobs") or []
        logprobs = (
            {"content": [logprob_entry(e) for e in entries], "refusal": None} if entries else None
        )
        return [self._chunk({"content": event.get("delta") or ""}, logprobs=logprobs)]

    def _on_refusal(self, event: dict[str, Any]) -> list[ChatOutput]:
        return [self._chunk({"refusal": event.get("delta") or ""})]

    def _on_reasoning(self, event: dict[str, Any]) -> list[ChatOutput]:
        # Separate parts as the non-streaming path joins them (§3), so both read the same.
        part = (
            event.get("item_id"),
            event.get("type"),
            event.get("summary_index", event.get("content_index")),
        )
        delta = event.get("delta") or ""
        if self._reasoning_part is not None and part != self._reasoning_part:
            delta = REASONING_SEPARATOR + delta
        self._reasoning_part = part
        return [self._chunk({"reasoning_content": delta})]

    def _on_item_added(self, event: dict[str, Any]) -> list[ChatOutput]:
        item = event.get("item") or {}
        if item.get("type") != "function_call":
            return []
        index = len(self._tool_by_item)
        self._tool_by_item[item.get("id")] = index
        self._tool_by_output[event.get("output_index")] = index
        call = {
            "index": index,
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _on_arguments(self, event: dict[str, Any]) -> list[ChatOutput]:
        index = self._tool_by_item.get(event.get("item_id"))
        if index is None:
            index = self._tool_by_output.get(event.get("output_index"))
        if index is None:
            return []  # arguments for an item we never saw added: nothing to attach them to
        call = {"index": index, "function": {"arguments": event.get("delta") or ""}}
        return [self._chunk({"tool_calls": [call]})]

    def _complete(self, response: dict[str, Any]) -> list[ChatOutput]:
        self._done = True
        has_tools = bool(self._tool_by_item) or any(
            item.get("type") == "function_call" for item in response.get("output") or []
        )
        reason = finish_reason_for_status(
            response.get("status") or "completed", response.get("incomplete_details"), has_tools
        )
        self.usage = usage_responses_to_chat(response.get("usage"))
        out: list[ChatOutput] = [self._chunk({}, finish_reason=reason)]
        if self._include_usage:
            usage_chunk = self._envelope()
            usage_chunk.update(choices=[], usage=self.usage)
            out.append(usage_chunk)
        out.append(DONE)
        return out

    # -- chunk envelope

    def _envelope(self) -> dict[str, Any]:
        if self._id is None:  # no response.created: still give every chunk one id
            self._start({})
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "system_fingerprint": None,
        }

    def _chunk(
        self,
        delta: dict[str, Any],
        *,
        finish_reason: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        chunk = self._envelope()
        chunk["choices"] = [
            {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        ]
        if self._include_usage:
            chunk["usage"] = None
        return chunk


_RESPONSES_DELTA_HANDLERS = {
    "response.output_text.delta": ResponsesToChatStream._on_text,
    "response.refusal.delta": ResponsesToChatStream._on_refusal,
    "response.reasoning_summary_text.delta": ResponsesToChatStream._on_reasoning,
    "response.reasoning_text.delta": ResponsesToChatStream._on_reasoning,
    "response.output_item.added": ResponsesToChatStream._on_item_added,
    "response.function_call_arguments.delta": ResponsesToChatStream._on_arguments,
}


# ---------------------------------------------------------------- §5.2 chat -> responses


@dataclass
class _Part:
    kind: str  # "output_text" | "refusal"
    text: str = ""
    logprobs: list[dict[str, Any]] = field(default_factory=list)

    def final(self) -> dict[str, Any]:
        if self.kind == "refusal":
            return {"type": "refusal", "refusal": self.text}
        return {
            "type": "output_text",
            "text": self.text,
            "annotations": [],
            "logprobs": self.logprobs,
        }


@dataclass
class _Item:
    kind: str  # "message" | "function_call" | "reasoning"
    item_id: str
    output_index: int
    text: str = ""  # reasoning text or function arguments
    parts: list[_Part] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    closed: bool = False

    def final(self) -> dict[str, Any]:
        if self.kind == "reasoning":
            return reasoning_item(self.text, item_id=self.item_id)
        if self.kind == "function_call":
            return function_call_item(self.call_id, self.name, self.text, item_id=self.item_id)
        return {
            "type": "message",
            "id": self.item_id,
            "status": "completed",
            "role": "assistant",
            "content": [part.final() for part in self.parts],
        }


class ChatToResponsesStream:
    """Chat chunks in (then `DONE` or EOF), typed Responses events out.

    `request` is the client's Responses body, echoed in the response object. `usage` is
    the final usage in Responses form once the upstream reported it.
    """

    def __init__(self, request: dict[str, Any]) -> None:
        self._request = request
        self._seq = 0
        self._response: dict[str, Any] | None = None
        self._items: list[_Item] = []  # in output_index order
        self._message: _Item | None = None
        self._reasoning: _Item | None = None
        self._tools: dict[int, _Item] = {}  # by chat tool_calls index
        self._finish_reason: str | None = None
        self._done = False
        self.usage: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def response(self) -> dict[str, Any] | None:
        """The response object as last sent (the terminal one once `done`)."""
        return self._response

    def feed(self, chunk: dict[str, Any] | str) -> list[dict[str, Any]]:
        if self._done:
            return []
        if chunk == DONE:
            return self._end()
        if not isinstance(chunk, dict):
            raise TypeError(f"expected a chat chunk dict or DONE, got {type(chunk).__name__}")
        if chunk.get("error") is not None:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            return self.fail(error.get("message") or "upstream stream error", error.get("code"))
        events = [] if self._response is not None else self._start(chunk)
        if chunk.get("usage"):
            self.usage = usage_chat_to_responses(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0 or self._finish_reason is not None:
                continue
            events += self._on_delta(choice.get("delta") or {}, choice.get("logprobs"))
            if choice.get("finish_reason"):
                events += self._on_finish(choice["finish_reason"])
        return events

    def fail(self, message: str, code: str | None = None) -> list[dict[str, Any]]:
        """End with `response.failed`, keeping the items completed so far (§5.3)."""
        if self._done:
            return []
        events = [] if self._response is not None else self._start({})
        self._done = True
        error = {"code": response_error_code(code), "message": message}
        self._response = self._snapshot("failed", error=error)
        return [*events, self._emit("response.failed", response=self._response)]

    def finish(self) -> list[dict[str, Any]]:
        """EOF from the upstream: complete after a finish_reason, otherwise the stream broke."""
        if self._done:
            return []
        if self._finish_reason is None:
            return self.fail(EOF_MESSAGE)
        return self._end()

    # -- lifecycle

    def _start(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        created = int(chunk.get("created") or time.time())
        model = chunk.get("model") or self._request.get("model")
        self._response = response_envelope(self._request, created_at=created, model=model)
        snapshot = self._snapshot("in_progress")
        return [
            self._emit("response.created", response=snapshot),
            self._emit("response.in_progress", response=snapshot),
        ]

    def _end(self) -> list[dict[str, Any]]:
        events = [] if self._response is not None else self._start({})
        if self._finish_reason is None:  # [DONE] without a finish_reason: a clean stop
            events += self._on_finish("stop")
        self._done = True
        status, incomplete = status_for_finish_reason(self._finish_reason)
        self._response = self._snapshot(status, incomplete_details=incomplete)
        return [*events, self._emit(f"response.{status}", response=self._response)]

    def _snapshot(self, status: str, **fields: Any) -> dict[str, Any]:
        assert self._response is not None
        output = [item.final() for item in self._items if item.closed]
        return {**self._response, "status": status, "output": output, "usage": self.usage, **fields}

    def _emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    # -- deltas

    def _on_delta(
        self, delta: dict[str, Any], logprobs: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        thoughts = reasoning_text(delta)
        if thoughts:
            events += self._reasoning_delta(thoughts)
        if delta.get("content"):
            entries = [logprob_entry(e) for e in (logprobs or {}).get("content") or []]
            events += self._text_delta("output_text", delta["content"], entries)
        if delta.get("refusal"):
            events += self._text_delta("refusal", delta["refusal"], [])
        for position, call in enumerate(delta.get("tool_calls") or []):
            events += self._tool_call_delta(call.get("index", position), call)
        return events

    def _reasoning_delta(self, text: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        item = self._reasoning
        if item is None:
            events += self._close_open()
            item = self._reasoning = self._open("reasoning", "rs_")
            events.append(
                self._item_added(
                    item, {"type": "reasoning", "id": item.item_id, "summary": [], "content": []}
                )
            )
            events.append(
                self._part_event(
                    "response.content_part.added", item, 0, {"type": "reasoning_text", "text": ""}
                )
            )
        item.text += text
        events.append(self._delta_event("response.reasoning_text.delta", item, 0, text))
        return events

    def _text_delta(
        self, kind: str, text: str, logprobs: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        events = self._ensure_message()
        item = self._message
        assert item is not None
        if not item.parts or item.parts[-1].kind != kind:
            item.parts.append(_Part(kind))
            events.append(
                self._part_event(
                    "response.content_part.added", item, len(item.parts) - 1, _empty_part(kind)
                )
            )
        part = item.parts[-1]
        part.text += text
        index = len(item.parts) - 1
        if kind == "refusal":
            events.append(self._delta_event("response.refusal.delta", item, index, text))
        else:
            part.logprobs += logprobs
            events.append(
                self._delta_event(
                    "response.output_text.delta", item, index, text, logprobs=logprobs
                )
            )
        return events

    def _ensure_message(self) -> list[dict[str, Any]]:
        if self._message is not None:
            return []
        events = self._close_open()
        item = self._message = self._open("message", "msg_")
        added = {
            "type": "message",
            "id": item.item_id,
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        events.append(self._item_added(item, added))
        return events

    def _tool_call_delta(self, index: int, call: dict[str, Any]) -> list[dict[str, Any]]:
        function = call.get("function") or {}
        arguments = function.get("arguments") or ""
        events: list[dict[str, Any]] = []
        item = self._tools.get(index)
        if item is None:
            events += self._close_open(keep_tool_calls=True)
            item = self._tools[index] = self._open("function_call", "fc_")
            item.call_id = call.get("id") or new_id("call_")
            item.name = function.get("name") or ""
            added = {
                "type": "function_call",
                "id": item.item_id,
                "call_id": item.call_id,
                "name": item.name,
                "arguments": "",
                "status": "in_progress",
            }
            events.append(self._item_added(item, added))
        if arguments and not item.closed:  # a call already closed by later output cannot grow
            item.text += arguments
            events.append(
                self._emit(
                    "response.function_call_arguments.delta",
                    item_id=item.item_id,
                    output_index=item.output_index,
                    delta=arguments,
                )
            )
        return events

    def _on_finish(self, finish_reason: str) -> list[dict[str, Any]]:
        self._finish_reason = finish_reason
        events = [] if self._items else self._ensure_message() + self._open_empty_text_part()
        return events + self._close_open()

    def _open_empty_text_part(self) -> list[dict[str, Any]]:
        """The empty message of a response with no output still gets its (empty) text part."""
        item = self._message
        assert item is not None
        item.parts.append(_Part("output_text"))
        return [
            self._part_event("response.content_part.added", item, 0, _empty_part("output_text"))
        ]

    # -- items

    def _open(self, kind: str, prefix: str) -> _Item:
        item = _Item(kind=kind, item_id=new_id(prefix), output_index=len(self._items))
        self._items.append(item)
        return item

    def _close_open(self, *, keep_tool_calls: bool = False) -> list[dict[str, Any]]:
        """Close open items in output_index order.

        A new message or reasoning item closes everything before it, so items finish in
        the order they started, as in OpenAI's own streams; only parallel tool calls
        (chat interleaves their argument deltas by `index`) stay open side by side.
        """
        events: list[dict[str, Any]] = []
        for item in self._items:
            if not item.closed and not (keep_tool_calls and item.kind == "function_call"):
                events += self._close(item)
        return events

    def _close(self, item: _Item) -> list[dict[str, Any]]:
        item.closed = True
        if item is self._message:
            self._message = None
        elif item is self._reasoning:
            self._reasoning = None
        events = []
        if item.kind == "message":
            for index, part in enumerate(item.parts):
                if part.kind == "refusal":
                    events.append(
                        self._part_field_event(
                            "response.refusal.done", item, index, refusal=part.text
                        )
                    )
                else:
                    events.append(
                        self._part_field_event(
                            "response.output_text.done",
                            item,
                            index,
                            text=part.text,
                            logprobs=part.logprobs,
                        )
                    )
                events.append(
                    self._part_event("response.content_part.done", item, index, part.final())
                )
        elif item.kind == "function_call":
            events.append(
                self._emit(
                    "response.function_call_arguments.done",
                    item_id=item.item_id,
                    output_index=item.output_index,
                    arguments=item.text,
                )
            )
        else:
            events.append(
                self._part_field_event("response.reasoning_text.done", item, 0, text=item.text)
            )
            events.append(
                self._part_event(
                    "response.content_part.done",
                    item,
                    0,
                    {"type": "reasoning_text", "text": item.text},
                )
            )
        events.append(
            self._emit(
                "response.output_item.done", output_index=item.output_index, item=item.final()
            )
        )
        return events

    # -- event shapes

    def _item_added(self, item: _Item, shape: dict[str, Any]) -> dict[str, Any]:
        return self._emit("response.output_item.added", output_index=item.output_index, item=shape)

    def _part_event(
        self, kind: str, item: _Item, index: int, part: dict[str, Any]
    ) -> dict[str, Any]:
        return self._part_field_event(kind, item, index, part=part)

    def _delta_event(
        self, kind: str, item: _Item, index: int, delta: str, **fields: Any
    ) -> dict[str, Any]:
        return self._part_field_event(kind, item, index, delta=delta, **fields)

    def _part_field_event(
        self, kind: str, item: _Item, index: int, **fields: Any
    ) -> dict[str, Any]:
        return self._emit(
            kind,
            item_id=item.item_id,
            output_index=item.output_index,
            content_index=index,
            **fields,
        )


def _empty_part(kind: str) -> dict[str, Any]:
    if kind == "refusal":
        return {"type": "refusal", "refusal": ""}
    return {"type": "output_text", "text": "", "annotations": []}
