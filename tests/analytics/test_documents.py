"""Events as JSON documents (`EventBatch.documents`, documents.py): the same stored document and
row as the message form, plain values only, and the batch refused on anything else."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from services.analytics import documents
from services.analytics.events import (
    InvalidEvent,
    document_to_stored,
    message_to_document,
    to_stored,
)
from services.common.pricing import PriceTable
from tests.analytics.conftest import make_event, to_pb

PRICES = PriceTable.load(None, None)


def _variants() -> list[dict[str, Any]]:
    """A full event, a sparse one, one with integers in double fields and unknown keys, one
    without cost (priced by the service) and one with a reasoning model's usage."""
    sparse = {"id": "ev-sparse", "timestamp": 1_700_000_000, "request": {"model": "o1-mini"}}
    widened = make_event(performance={"duration_ms": 250, "tokens_per_second": 10})
    widened["extra"] = {"ignored": True}
    widened["routing"]["not_a_field"] = 1
    reasoning = make_event(
        token_usage={"prompt_tokens": 50, "completion_tokens": 80, "reasoning_tokens": 30}
    )
    return [make_event(), sparse, widened, make_event(cost=None), reasoning]


@pytest.mark.parametrize("event", _variants())
def test_document_form_stores_exactly_what_the_message_form_stores(event: dict[str, Any]) -> None:
    from_message = to_stored(to_pb(event), PRICES)
    from_document = document_to_stored(orjson.dumps(event), PRICES)
    assert from_document == from_message


def test_normalize_gives_the_full_shape_of_message_to_document() -> None:
    event = {"id": "ev-1", "timestamp": 1.5, "routing": {"mcp_servers": ["fs"]}}
    assert documents.normalize(event) == message_to_document(to_pb(event))
    assert documents.normalize(event)["routing"]["fallback_index"] is None
    assert documents.normalize(event)["request"] is None


@pytest.mark.parametrize(
    "section",
    [
        pytest.param({"performance": {"duration_ms": math.nan}}, id="nan"),
        pytest.param({"performance": {"duration_ms": math.inf}}, id="inf"),
        pytest.param({"performance": {"duration_ms": "12"}}, id="string for a double"),
        pytest.param({"request": {"size_bytes": True}}, id="bool for an int"),
        pytest.param({"request": {"size_bytes": 1.5}}, id="float for an int"),
        pytest.param({"request": {"size_bytes": 2**63}}, id="int64 overflow"),
        pytest.param({"request": {"stream": 1}}, id="int for a bool"),
        pytest.param({"request": {"model": 5}}, id="int for a string"),
        pytest.param({"routing": {"mcp_servers": ["fs", 3]}}, id="non-string in a list"),
        pytest.param({"routing": "router"}, id="string for a sub-message"),
    ],
)
def test_values_that_do_not_map_one_to_one_are_refused(section: dict[str, Any]) -> None:
    with pytest.raises(documents.NotPlain):
        documents.normalize(make_event(**section))


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        orjson.dumps(make_event(id="")),
        orjson.dumps(make_event(id="x" * 129)),
        orjson.dumps(make_event(timestamp=0)),
        orjson.dumps({"timestamp": 1.0}),
    ],
)
def test_unstorable_documents_raise_invalid_event(raw: bytes) -> None:
    with pytest.raises(InvalidEvent):
        document_to_stored(raw, PRICES)
