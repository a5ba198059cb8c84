"""The one protobuf ↔ JSON converter (router-schema §12)."""

from __future__ import annotations

import pytest

from services.common.pb import router_pb2
from services.router.pbjson import JsonShapeError, from_json, to_json


def test_int64_are_numbers_and_unset_optionals_omitted() -> None:
    plan = router_pb2.RoutePlan(
        route_id="rte_0",
        upstream=router_pb2.Upstream(base_url="http://u", mode="chat", model_id="m"),
        hints=router_pb2.PlanHints(est_cost_micro=2**40 + 1),
    )
    body = to_json(plan)
    assert body["hints"] == {"est_cost_micro": 2**40 + 1}
    assert "limits" not in body and "fallbacks" not in body and "policy" not in body
    assert "headers" not in body["upstream"]


def test_required_zero_scalars_are_kept() -> None:
    plan = router_pb2.RoutePlan(route_id="r", cache=router_pb2.CacheDirective(ttl_ms=0))
    assert to_json(plan)["cache"] == {"ttl_ms": 0}
    assert to_json(router_pb2.FeedbackAck(accepted=0)) == {"accepted": 0}


def test_struct_numbers_read_as_ints_when_integral() -> None:
    policy = router_pb2.Policy()
    policy.explain_detail.update({"k": 10, "lambda": 0.5, "neighbors": [{"similarity": 1.0}]})
    detail = to_json(policy)["explain_detail"]
    assert detail == {"k": 10, "lambda": 0.5, "neighbors": [{"similarity": 1}]}
    assert isinstance(detail["k"], int)


def test_maps_round_trip() -> None:
    upstream = router_pb2.Upstream(base_url="b", mode="chat", model_id="m", headers={"x-a": "1"})
    assert from_json(to_json(upstream), router_pb2.Upstream) == upstream


def test_unknown_fields_ignored_and_bad_shapes_typed() -> None:
    req = from_json({"alias": "a", "brand_new_field": {"x": 1}}, router_pb2.RouteRequest)
    assert req.alias == "a"
    with pytest.raises(JsonShapeError):
        from_json({"alias": 5}, router_pb2.RouteRequest)
    with pytest.raises(JsonShapeError):
        from_json(["alias"], router_pb2.RouteRequest)
