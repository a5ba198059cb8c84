"""The incremental SSE parser and the wire encoders."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.edge.translate import (
    DONE,
    ChatToResponsesStream,
    ResponsesToChatStream,
    SSEEvent,
    SSEParser,
    SSEProtocolError,
    decode_data,
    encode_chat_chunk,
    encode_comment,
    encode_done,
    encode_response_event,
)
from tests.translate.sdk import fixture


def parse_all(raw: bytes, cuts: list[int] | None = None) -> list[SSEEvent]:
    parser = SSEParser()
    bounds = sorted({0, len(raw), *(c for c in (cuts or []) if 0 < c < len(raw))})
    out = []
    for start, end in itertools.pairwise(bounds):
        out += parser.feed(raw[start:end])
    return out


def test_basic_events_comments_and_named_events() -> None:
    raw = b': keep-alive\n\nevent: response.created\ndata: {"a":1}\n\ndata: [DONE]\n\n'
    assert parse_all(raw) == [
        SSEEvent(data='{"a":1}', event="response.created"),
        SSEEvent(data="[DONE]"),
    ]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(eol: bytes) -> None:
    raw = eol.join([b"event: x", b"data: one", b"data: two", b"", b"data:three", b"", b""])
    assert parse_all(raw) == [SSEEvent(data="one\ntwo", event="x"), SSEEvent(data="three")]


def test_crlf_split_across_reads_is_one_line_end() -> None:
    raw = b"data: a\r\n\r\ndata: b\r\n\r\n"
    for cut in range(1, len(raw)):
        assert parse_all(raw, [cut]) == [SSEEvent(data="a"), SSEEvent(data="b")], cut


def test_multibyte_utf8_split_across_reads() -> None:
    raw = 'data: {"t":"héllo → 世界"}\n\n'.encode()
    for cut in range(1, len(raw)):
        assert parse_all(raw, [cut]) == [SSEEvent(data='{"t":"héllo → 世界"}')]


def test_bom_field_without_colon_id_and_retry() -> None:
    raw = "\ufeffid: 7\nretry: 1000\ndata\nevent\n\n".encode()
    assert parse_all(raw) == [SSEEvent(data="", event=None, id="7")]


def test_incomplete_event_is_not_dispatched() -> None:
    assert parse_all(b'data: {"a":1}\n') == []


def test_oversized_event_is_a_protocol_error() -> None:
    parser = SSEParser(max_event_bytes=64)
    with pytest.raises(SSEProtocolError):
        for _ in range(10):
            parser.feed(b"data: " + b"x" * 20 + b"\n")


def test_decode_data() -> None:
    assert decode_data(SSEEvent(data="[DONE]")) == DONE
    assert decode_data(SSEEvent(data='{"a": [1]}')) == {"a": [1]}
    for bad in ("{oops", "[1, 2]"):
        with pytest.raises(SSEProtocolError):
            decode_data(SSEEvent(data=bad))


def test_encoders() -> None:
    assert encode_chat_chunk({"a": "é"}) == b'data: {"a":"\xc3\xa9"}\n\n'
    assert encode_done() == b"data: [DONE]\n\n"
    assert encode_response_event({"type": "response.created", "sequence_number": 0}) == (
        b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
    )
    assert encode_comment("keep-alive") == b": keep-alive\n\n"
    assert encode_comment("a\nb") == b": a b\n\n"


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=20000), max_size=30), crlf=st.booleans())
def test_responses_stream_survives_any_split(cuts: list[int], crlf: bool) -> None:
    """Wire bytes of a real stream, cut anywhere, parse back to the same events."""
    events = fixture("responses_stream_reasoning_text_tool.json")
    raw = b"".join(encode_response_event(e) for e in events)
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    parsed = parse_all(raw, cuts)
    assert [p.event for p in parsed] == [e["type"] for e in events]
    assert [decode_data(p) for p in parsed] == events


def test_wire_to_wire_chat_upstream_to_responses_client() -> None:
    """Chat SSE bytes in -> parser -> converter -> Responses SSE bytes out, re-parsed."""
    chunks = fixture("chat_stream_tool_calls.json")
    upstream = b"".join(encode_done() if c == DONE else encode_chat_chunk(c) for c in chunks)
    parser, stream, wire = SSEParser(), ChatToResponsesStream({"model": "m", "input": "x"}), b""
    for start in range(0, len(upstream), 97):
        for event in parser.feed(upstream[start : start + 97]):
            wire += b"".join(encode_response_event(e) for e in stream.feed(decode_data(event)))
    reparsed = parse_all(wire)
    assert reparsed[-1].event == "response.completed"
    assert [orjson.loads(e.data)["sequence_number"] for e in reparsed] == list(range(len(reparsed)))


def test_wire_to_wire_responses_upstream_to_chat_client() -> None:
    events = fixture("responses_stream_reasoning_text_tool.json")
    upstream = b"".join(encode_response_event(e) for e in events)
    parser, stream, wire = SSEParser(), ResponsesToChatStream("m", include_usage=True), b""
    for event in parser.feed(upstream):
        for out in stream.feed(decode_data(event)):
            wire += encode_done() if out == DONE else encode_chat_chunk(out)
    reparsed = parse_all(wire)
    assert reparsed[-1] == SSEEvent(data="[DONE]")
    assert all(e.event is None for e in reparsed)
