"""Schema-driven fuzzing of the edge with schemathesis: no 5xx, no hang, every error OpenAI-shaped.

Bodies are generated from the official SDK's request types (tests/fuzz/openapi_schema.py),
sent to a real edge process whose provider is the mock upstream. Upstream-side answers to odd
but schema-valid bodies are the mock's business; what is checked is the edge's own behaviour.
"""

from __future__ import annotations

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from tests.fuzz.openapi_schema import edge_openapi

pytestmark = pytest.mark.e2e

schema = schemathesis.openapi.from_dict(edge_openapi())
HEADERS = {"authorization": "Bearer sk-fuzz"}
# The mock answers schema-valid input; the edge relays provider errors it did not cause.
UPSTREAM_STATUSES = {502, 504}


def assert_openai_error(body: bytes) -> None:
    error = orjson.loads(body)["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert "code" in error


@schema.parametrize()
@settings(
    max_examples=60,
    # Generated cases only: the SDK schema's ~1500 documented examples alone take minutes.
    phases=[Phase.generate],
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_schema_valid_bodies_never_break_the_edge(case, edge_url: str) -> None:  # type: ignore[no-untyped-def]
    response = case.call(base_url=edge_url, headers=HEADERS, timeout=30)
    assert response.status_code < 500 or response.status_code in UPSTREAM_STATUSES, (
        response.status_code,
        response.text[:500],
    )
    if response.status_code >= 400:
        [content_type] = response.headers["content-type"]  # schemathesis lists header values
        assert content_type.startswith("application/json")
        assert_openai_error(response.content)
    assert "Traceback" not in response.text
