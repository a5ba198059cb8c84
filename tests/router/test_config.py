"""Config loading (config-files §2, §4): validation, revisions, derived forms."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.router.catalog import ConfigError, derived_catalog, parse_catalog
from services.router.config_models import KnnAlias, StaticAlias
from services.router.routing_config import load_routing_config, parse_aliases
from services.router.settings import RouterSettings
from tests.router.conftest import ALIASES, GPT4, MIXTRAL, REFERENCE_CATALOG, write_json

Settings = Callable[..., RouterSettings]


def test_reference_config_loads(router_settings: Settings) -> None:
    config = load_routing_config(router_settings())
    assert isinstance(config.aliases["nano-basic"], StaticAlias)
    knn = config.aliases["auto"]
    assert isinstance(knn, KnnAlias)
    assert (knn.k, knn.min_neighbors, knn.min_similarity, knn.confidence_floor) == (10, 3, 0.2, 0.6)
    assert (knn.lambda_max, knn.default_tradeoff, knn.default_output_tokens) == (1.0, 0.5, 256)
    assert knn.sticky_turns == 20
    stats = config.stats()
    assert (stats.aliases, stats.knn_aliases, stats.prefix_rules, stats.catalog_models) == (
        5,
        2,
        2,
        2,
    )
    assert stats.policy_rev == config.policy_rev
    assert len(config.policy_rev) == len("pol_") + 12 and config.policy_rev.startswith("pol_")


def test_catalog_revision_is_file_sha256() -> None:
    data = REFERENCE_CATALOG.read_bytes()
    catalog = parse_catalog(data)
    assert catalog.revision == "cat_" + hashlib.sha256(data).hexdigest()[:12]
    assert sorted(catalog.entries) == sorted([MIXTRAL, GPT4])
    entry = catalog.get(MIXTRAL)
    assert entry is not None
    assert entry.upstream.model_id == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert catalog.resolve_model("mistralai/Mixtral-8x7B-Instruct-v0.1") == MIXTRAL
    assert "upstream" not in {f.name for f, _ in entry.model.ListFields()}


def test_missing_price_form_is_derived() -> None:
    doc: dict[str, Any] = orjson.loads(REFERENCE_CATALOG.read_bytes())
    cost = doc["models"][0]["cost"]
    del cost["input_per_million_micro"], cost["output_per_million"]
    cost["cached_per_million"] = 0.15
    entry = parse_catalog(orjson.dumps(doc)).get(MIXTRAL)
    assert entry is not None
    served = entry.model.cost
    assert served.input_per_million_micro == 600000
    assert served.output_per_million == pytest.approx(0.6)
    assert served.cached_per_million_micro == 150000


def _policy_rev(router_settings: Settings, tmp_path: Path, aliases: dict[str, Any]) -> str:
    path = write_json(tmp_path / "a.json", aliases)
    return load_routing_config(router_settings(router_aliases=path)).policy_rev


def test_policy_rev_tracks_config(router_settings: Settings, tmp_path: Path) -> None:
    first = _policy_rev(router_settings, tmp_path, ALIASES)
    assert _policy_rev(router_settings, tmp_path, ALIASES) == first
    changed = copy.deepcopy(ALIASES)
    changed["auto"]["k"] = 7
    assert _policy_rev(router_settings, tmp_path, changed) != first
    no_default = router_settings(router_default_upstream=False)
    assert load_routing_config(no_default).policy_rev != first


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"base_url": "http://x", "mode": "grpc", "model_id": "m"}, "mode"),
        ({"base_url": "http://x", "mode": "chat"}, "model_id"),
        ({"mode": "chat", "model_id": "m"}, "base_url"),
        ({"base_url": "ftp://x", "mode": "chat", "model_id": "m"}, "http"),
        ({"policy": "random", "candidates": [MIXTRAL]}, "unknown policy"),
        ({"policy": "knn", "candidates": [MIXTRAL]}, "default_model"),
        ({"policy": "knn", "candidates": ["nope"], "default_model": MIXTRAL}, "'nope'"),
        ({"policy": "knn", "candidates": [MIXTRAL], "default_model": "gone"}, "'gone'"),
        ({"policy": "knn", "candidates": [], "default_model": MIXTRAL}, "candidates"),
        ({"policy": "knn", "candidates": [MIXTRAL], "default_model": MIXTRAL, "k": 0}, "k"),
        (
            {
                "base_url": "http://x",
                "mode": "chat",
                "model_id": "m",
                "fallbacks": [{"base_url": "http://y", "mode": "chat"}],
            },
            "fallbacks",
        ),
        ("not an object", "must be an object"),
        *(
            ({"base_url": "http://x", "mode": "chat", "model_id": "m", "limits": limits}, where)
            for limits, where in [
                ({"max_output_tokens": 0}, "limits.max_output_tokens"),
                ({"timeout_ms": -5}, "limits.timeout_ms"),
                ({"max_input_tokens": "4000"}, "limits.max_input_tokens"),
                ({"max_output_tokens": 1.5}, "limits.max_output_tokens"),
                ({"timeout_ms": True}, "limits.timeout_ms"),
                ({"max_output_tokens": 2**63}, "limits.max_output_tokens"),
                ("fast", "limits"),
            ]
        ),
        (
            {
                "policy": "knn",
                "candidates": [MIXTRAL],
                "default_model": MIXTRAL,
                "limits": {"timeout_ms": 0},
            },
            "limits.timeout_ms",
        ),
    ],
)
def test_invalid_alias_entries_abort(
    router_settings: Settings, tmp_path: Path, entry: Any, message: str
) -> None:
    path = write_json(tmp_path / "bad.json", {"broken": entry})
    with pytest.raises(ConfigError, match="broken") as info:
        load_routing_config(router_settings(router_aliases=path))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b"[]", "expected"),
        (orjson.dumps({"models": [{"id": "m"}]}), "upstream"),
        (
            orjson.dumps(
                {"models": [{"id": "m", "upstream": {"base_url": "http://x", "mode": "zz"}}]}
            ),
            "mode",
        ),
        (
            orjson.dumps(
                {
                    "models": [
                        {
                            "id": "m",
                            "upstream": {"base_url": "http://x", "mode": "chat", "model_id": "a"},
                        },
                        {
                            "id": "m",
                            "upstream": {"base_url": "http://x", "mode": "chat", "model_id": "b"},
                        },
                    ]
                }
            ),
            "duplicate",
        ),
        (
            orjson.dumps(
                {
                    "models": [
                        {
                            "id": "m",
                            "cost": {"input_per_million": -1},
                            "upstream": {"base_url": "http://x", "mode": "chat", "model_id": "a"},
                        }
                    ]
                }
            ),
            "non-negative",
        ),
    ],
)
def test_invalid_catalogs_abort(
    router_settings: Settings, tmp_path: Path, data: bytes, message: str
) -> None:
    path = tmp_path / "catalog.json"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=message):
        load_routing_config(router_settings(catalog_path=path))


def _one_model(**fields: Any) -> bytes:
    upstream = {"base_url": "http://x", "mode": "chat", "model_id": "a"}
    return orjson.dumps({"models": [{"id": "m", "upstream": upstream, **fields}]})


def test_deprecates_at_is_parsed_and_served_as_given() -> None:
    entry = parse_catalog(_one_model(deprecates_at="2030-01-31T01:30:00+02:00")).get("m")
    assert entry is not None
    assert entry.deprecates_at == datetime(2030, 1, 30, 23, 30, tzinfo=UTC)
    assert entry.model.deprecates_at == "2030-01-31T01:30:00+02:00"
    undated = parse_catalog(_one_model()).get("m")
    assert undated is not None and undated.deprecates_at is None


@pytest.mark.parametrize(
    "value",
    [
        "2030-01-31T00:00:00",  # naive
        "2030-01-31",  # a date, no time or offset
        "next tuesday",
        "2030-13-01T00:00:00Z",  # no such month
        "1900000000",  # Unix seconds are not RFC 3339
        1900000000,
    ],
)
def test_deprecates_at_must_be_rfc3339_with_an_offset(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"catalog models\[0\] \(m\): deprecates_at"):
        parse_catalog(_one_model(deprecates_at=value))


def test_missing_files_are_config_errors(router_settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="aliases file"):
        load_routing_config(router_settings(router_aliases=tmp_path / "absent.json"))


def test_catalog_is_derived_without_a_file(router_settings: Settings, tmp_path: Path) -> None:
    aliases = {
        "fast": {"base_url": "http://a/v1", "mode": "chat", "model_id": "a-1"},
        "smart": {"base_url": "http://b/v1", "mode": "chat", "model_id": "b-1"},
        "pick": {"policy": "knn", "candidates": ["fast", "smart"], "default_model": "fast"},
    }
    path = write_json(tmp_path / "a.json", aliases)
    config = load_routing_config(router_settings(router_aliases=path, catalog_path=None))
    assert config.catalog.source == "derived"
    assert sorted(config.catalog.entries) == ["fast", "gpt-", "smart", "vllm-"]
    assert config.catalog.revision.startswith("cat_")
    # KNN candidates must exist in the derived catalog too.
    aliases["pick"]["candidates"] = ["fast", "missing"]
    write_json(path, aliases)
    with pytest.raises(ConfigError, match="'missing'"):
        load_routing_config(router_settings(router_aliases=path, catalog_path=None))


def test_parse_aliases_rejects_non_object() -> None:
    with pytest.raises(ConfigError, match="JSON object"):
        parse_aliases(b"[1, 2]")


def test_caps_are_checked_only_where_the_catalog_speaks() -> None:
    catalog = parse_catalog(REFERENCE_CATALOG.read_bytes())
    mixtral = catalog.get(MIXTRAL)
    assert mixtral is not None
    assert mixtral.missing_caps(["text", "json_mode", "logprobs"]) == []
    assert mixtral.missing_caps(["vision", "tools", "reasoning", "file"]) == [
        "vision",
        "tools",
        "file",
    ]
    derived = derived_catalog(
        {"fast": StaticAlias(base_url="http://a", mode="chat", model_id="a")}, []
    ).get("fast")
    assert derived is not None and derived.missing_caps(["tools", "vision"]) == []
