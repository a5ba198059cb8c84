"""SIGNALBOX_BACKENDS grammar (config-files §1) and local resolution (router-schema §9)."""

from __future__ import annotations

import logging
import re

import pytest

from services.common.backends import BackendRule, local_plan, match_backend, parse_backends

EXAMPLE = (
    "prefix=vllm-,base=http://h:8000/v1,mode=chat;"
    "prefix=gpt-,base=https://api.openai.com/v1,key_env=OPENAI_API_KEY"
)


def test_spec_example_parses_into_two_rules() -> None:
    assert parse_backends(EXAMPLE, "responses") == [
        BackendRule("vllm-", "http://h:8000/v1", None, "chat"),
        BackendRule("gpt-", "https://api.openai.com/v1", "OPENAI_API_KEY", "responses"),
    ]


@pytest.mark.parametrize("spec", [None, "", "  ", ";;,"])
def test_empty_spec_has_no_rules(spec: str | None) -> None:
    assert parse_backends(spec, "responses") == []


def test_keys_are_case_insensitive_and_synonyms_accepted() -> None:
    rules = parse_backends(
        " PREFIX = a- , Base_URL = http://a/v1/ ; API_KEY_ENV = A_KEY , Mode = CHAT", "responses"
    )
    assert rules == [BackendRule("a-", "http://a/v1", "A_KEY", "chat")]


def test_prefix_starts_new_rule_only_after_prefix_and_base() -> None:
    # The second prefix replaces the first because no base has arrived yet.
    rules = parse_backends("prefix=x-,prefix=y-,base=http://y,prefix=z-,base=http://z", "chat")
    assert [(r.prefix, r.base_url) for r in rules] == [("y-", "http://y"), ("z-", "http://z")]


def test_incomplete_and_bad_rules_are_dropped_with_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="services.common.backends")
    rules = parse_backends(
        "prefix=ok-,base=http://ok;prefix=m-,base=http://m,mode=grpc;"
        "prefix=nobase-;junk;colour=blue",
        "responses",
    )
    assert rules == [BackendRule("ok-", "http://ok", None, "responses")]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("rule dropped" in m for m in messages) == 2
    assert sum("token ignored" in m for m in messages) == 2
    assert parse_backends("base=http://orphan", "chat") == []


def test_first_matching_rule_wins() -> None:
    rules = parse_backends("prefix=gpt-,base=http://one;prefix=gpt-4,base=http://two", "chat")
    assert match_backend(rules, "gpt-4o").base_url == "http://one"  # type: ignore[union-attr]
    assert match_backend(rules, "claude") is None


def test_local_plan_uses_matching_rule() -> None:
    rules = parse_backends(EXAMPLE, "responses")
    plan = local_plan(
        "vllm-llama", "responses", rules, openai_base_url="https://x/v1", upstream_mode="responses"
    )
    assert re.fullmatch(r"rte_[0-9a-f]{16}", plan.route_id)
    assert (plan.upstream.base_url, plan.upstream.mode, plan.upstream.model_id) == (
        "http://h:8000/v1",
        "chat",
        "vllm-llama",
    )
    assert not plan.upstream.HasField("auth_env")
    assert (plan.policy.revision, plan.policy.id) == ("local", "backends_env")
    assert plan.policy_rev == "local"
    assert not plan.HasField("cache")
    assert len(plan.fallbacks) == 0
    keyed = local_plan("gpt-5", "chat", rules, openai_base_url="u", upstream_mode="responses")
    assert keyed.upstream.auth_env == "OPENAI_API_KEY"


@pytest.mark.parametrize(("api", "mode"), [("chat", "chat"), ("responses", "responses")])
def test_local_plan_default_upstream(api: str, mode: str) -> None:
    plan = local_plan(
        "o3-mini", api, [], openai_base_url="https://api.example/v1/", upstream_mode="responses"
    )
    assert (plan.upstream.base_url, plan.upstream.mode, plan.upstream.model_id) == (
        "https://api.example/v1",
        mode,
        "o3-mini",
    )
    assert plan.upstream.auth_env == "OPENAI_API_KEY"
    assert (plan.policy.revision, plan.policy.id) == ("local", "default")
    assert plan.policy.explain_detail["strategy"] == "default"


def test_route_ids_are_fresh() -> None:
    ids = {
        local_plan("m", "chat", [], openai_base_url="u", upstream_mode="chat").route_id
        for _ in range(50)
    }
    assert len(ids) == 50
