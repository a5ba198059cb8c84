"""Property: any chat chunk sequence gives a well-formed Responses stream saying the same."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.edge.translate import DONE, ChatToResponsesStream, ResponsesToChatStream
from tests.translate.sdk import validate_chat_chunk, validate_event

pieces = st.text(min_size=1, max_size=8)
delta = st.one_of(
    pieces.map(lambda t: {"reasoning_content": t}),
    pieces.map(lambda t: {"content": t}),
    pieces.map(lambda t: {"refusal": t}),
    st.builds(
        lambda index, args: {
            "tool_calls": [
                {
                    "index": index,
                    "id": f"call_{index}",
                    "type": "function",
                    "function": {"name": f"f{index}", "arguments": args},
                }
            ]
        },
        st.integers(0, 2),
        st.sampled_from(["", "{", '"a":1', "}"]),
    ),
)
endings = st.sampled_from(["done", "eof", "error", "finish-eof", "finish-done"])


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-p",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


@settings(max_examples=120, deadline=None)
@given(
    deltas=st.lists(delta, max_size=25),
    finish=st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
    ending=endings,
)
def test_chat_chunks_to_responses_events(deltas: list[dict], finish: str, ending: str) -> None:
    stream = ChatToResponsesStream({"model": "m", "input": "x"})
    out: list[dict[str, Any]] = []
    for d in [{"role": "assistant", "content": ""}, *deltas]:
        out += stream.feed(chunk(d))
    if ending.startswith("finish"):
        out += stream.feed(chunk({}, finish))
    if ending.endswith("done"):
        out += stream.feed(DONE)
    elif ending.endswith("eof"):
        out += stream.finish()
    else:
        out += stream.fail("boom", "server_error")

    for event in out:
        validate_event(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    kinds = [e["type"] for e in out]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    terminal = out[-1]
    assert (
        sum(k in ("response.completed", "response.incomplete", "response.failed") for k in kinds)
        == 1
    )
    failed = ending in ("eof", "error")
    assert (terminal["type"] == "response.failed") is failed

    added = [e for e in out if e["type"] == "response.output_item.added"]
    done = [e for e in out if e["type"] == "response.output_item.done"]
    assert [e["output_index"] for e in added] == list(range(len(added)))
    assert [e["output_index"] for e in done] == sorted(e["output_index"] for e in done)
    assert terminal["response"]["output"] == [e["item"] for e in done]
    if not failed:
        assert len(done) == len(added) >= 1

    # What was streamed is what the final items say, item by item.
    for item in terminal["response"]["output"]:
        own = [e for e in out if e.get("item_id") == item["id"]]
        if item["type"] == "function_call":
            assert (
                "".join(e["delta"] for e in own if e["type"].endswith("arguments.delta"))
                == item["arguments"]
            )
        elif item["type"] == "reasoning":
            assert (
                "".join(e["delta"] for e in own if e["type"].endswith("reasoning_text.delta"))
                == item["content"][0]["text"]
            )
        else:
            for index, part in enumerate(item["content"]):
                streamed = "".join(
                    e["delta"] for e in own if e.get("content_index") == index and "delta" in e
                )
                assert streamed == part.get("text", part.get("refusal"))

    # And the whole thing turns back into chat chunks without loss of text.
    back = ResponsesToChatStream("m", include_usage=False)
    chat_out = [c for e in out for c in back.feed(e)]
    assert chat_out[-1] == DONE
    for c in chat_out[:-1]:
        if "error" not in c:
            validate_chat_chunk(c)
    texts = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chat_out[:-1] if c.get("choices")
    )
    assert texts == "".join(d.get("content", "") for d in deltas)
