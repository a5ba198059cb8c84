"""The stored document and row of one event (events.py): unset optional fields are null, an
explicitly set default (False, 0, "") is kept, and the extracted columns follow the document."""

from __future__ import annotations

import orjson
from google.protobuf import json_format

from services.analytics.events import COLUMNS, message_to_document, to_stored
from services.common.pb import analytics_pb2
from services.common.pricing import PriceTable


def sparse_event() -> analytics_pb2.AnalyticsEvent:
    event = analytics_pb2.AnalyticsEvent(id="ev-1", timestamp=1_700_000_000.5)
    event.request.model = "gpt-4o-mini"
    event.response.success = False  # set, and equal to the default
    event.response.status_code = 0
    event.routing.resolved_model = ""  # set but empty: model_key falls back to request.model
    event.routing.mcp_servers.extend(["fs", "web"])
    event.token_usage.prompt_tokens = 10
    return event


def test_document_has_every_field_with_null_for_unset_and_defaults_kept() -> None:
    document = message_to_document(sparse_event())
    assert document["request_id"] is None
    assert document["performance"] is None and document["cost"] is None
    assert document["response"]["success"] is False
    assert document["response"]["status_code"] == 0
    assert document["response"]["error_message"] is None
    assert document["routing"]["resolved_model"] == ""
    assert document["routing"]["mcp_servers"] == ["fs", "web"]
    assert document["routing"]["strategy"] is None
    # Every field of every present section is there, in declaration order.
    for section in ("request", "response", "routing", "token_usage"):
        fields = analytics_pb2.AnalyticsEvent.DESCRIPTOR.fields_by_name[section].message_type
        assert list(document[section]) == [f.name for f in fields.fields]
    # The same values as the reference mapping for everything set.
    reference = json_format.MessageToDict(
        sparse_event(), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert document["routing"]["mcp_servers"] == reference["routing"]["mcp_servers"]
    prompt = document["token_usage"]["prompt_tokens"]
    assert int(reference["token_usage"]["prompt_tokens"]) == prompt


def test_empty_repeated_fields_are_fresh_lists() -> None:
    first = message_to_document(analytics_pb2.AnalyticsEvent(id="a", timestamp=1.0, routing={}))
    first["routing"]["mcp_servers"].append("x")
    second = message_to_document(analytics_pb2.AnalyticsEvent(id="b", timestamp=1.0, routing={}))
    assert second["routing"]["mcp_servers"] == []


def test_row_columns_follow_the_document() -> None:
    prices = PriceTable.load(None, None)
    row = to_stored(sparse_event(), prices)
    columns = dict(zip(COLUMNS, row, strict=True))
    document = orjson.loads(columns.pop("event"))
    assert columns["id"] == "ev-1" and columns["timestamp"] == 1_700_000_000.5
    assert columns["model_key"] == "gpt-4o-mini"
    assert columns["success"] is False
    assert columns["endpoint"] is None and columns["duration_ms"] is None
    assert columns["prompt_tokens"] == 10 and columns["completion_tokens"] is None
    # Usage without a cost is priced by the service, and the cost column is that document's.
    assert document["cost"]["total_cost"] == columns["total_cost"]
    assert columns["total_cost"] is not None
