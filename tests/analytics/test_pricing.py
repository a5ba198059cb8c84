"""The price table (analytics.md §5): layers, deterministic lookup, and the §6 cost rule."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from services.common.pricing import PriceTable, PricingConfigError

CATALOG = Path("/work/shared/data/routing/models.json")


def write(path: Path, document: object) -> str:
    path.write_bytes(orjson.dumps(document))
    return str(path)


@pytest.fixture
def pricing_file(tmp_path: Path) -> str:
    return write(
        tmp_path / "pricing.json",
        {
            "models": {
                "gpt-4o": {"input_per_million": 5, "output_per_million": 15},
                "mixtral-8x7b-instruct": {"input_per_million": 0.5, "output_per_million": 0.9},
                "acme-": {"input_per_million": 1, "output_per_million": 2},
                "acme-large": {"input_per_million": 3, "output_per_million": 4},
                "thinker": {
                    "input_per_million": 1,
                    "output_per_million": 4,
                    "cached_per_million": 0.25,
                    "reasoning_per_million": 8,
                },
            },
            "default": {"input_per_million": 7, "output_per_million": 9},
        },
    )


def test_built_ins_only() -> None:
    table = PriceTable.load(None, None)
    assert table.source == "built_in" and len(table) == 7
    cost = table.cost("gpt-4o-mini", 1_000_000, 1_000_000, 0, 0)
    assert cost["pricing_model"] == "gpt-4o-mini"
    assert cost["total_cost"] == pytest.approx(0.75) and cost["total_cost_micro"] == 750_000
    assert table.lookup("o1-preview").pricing_model == "o1-preview"
    assert table.lookup("claude-3").pricing_model == "default"
    assert table.cost("claude-3", 1_000_000, 0, 0, 0)["total_cost_micro"] == 2_500_000


def test_longest_prefix_wins_and_exact_beats_prefix(pricing_file: str) -> None:
    table = PriceTable.load(pricing_file, None)
    assert table.lookup("gpt-4o-mini-2024-07-18").pricing_model == "gpt-4o-mini"
    assert table.lookup("gpt-4o-2024-08-06").pricing_model == "gpt-4o"
    assert table.lookup("o1-mini-2024").pricing_model == "o1-mini"
    assert table.lookup("o1-2024-12-17").pricing_model == "o1"
    assert table.lookup("acme-large-v2").pricing_model == "acme-large"
    assert table.lookup("acme-small").pricing_model == "acme-"
    assert table.lookup("acme-").pricing_model == "acme-"


def test_layers_override_per_exact_key(pricing_file: str) -> None:
    catalog_only = PriceTable.load(None, CATALOG)
    assert catalog_only.source == "built_in" and len(catalog_only) == 7 + 3
    # Catalog ids and their upstream model ids both carry the catalog price.
    for model in ("mixtral-8x7b-instruct", "mistralai/Mixtral-8x7B-Instruct-v0.1"):
        cost = catalog_only.cost(model, 1_000_000, 1_000_000, 0, 0)
        assert cost["total_cost_micro"] == 1_200_000 and cost["pricing_model"] == model
    gpt4 = catalog_only.cost("gpt-4-1106-preview", 1_000_000, 1_000_000, 0, 0)
    assert gpt4["total_cost_micro"] == 40_000_000

    layered = PriceTable.load(pricing_file, CATALOG)
    assert layered.source == "file"
    # File beats catalog (mixtral) and built-in (gpt-4o); untouched keys keep their layer.
    assert layered.cost("mixtral-8x7b-instruct", 1_000_000, 1_000_000, 0, 0)["total_cost"] == (
        pytest.approx(1.4)
    )
    assert layered.cost("gpt-4o", 1_000_000, 0, 0, 0)["total_cost"] == pytest.approx(5.0)
    assert layered.lookup("gpt-4-1106-preview").price.output == 30
    assert layered.lookup("gpt-3.5-turbo").price.output == pytest.approx(1.5)
    # The file's default replaces the built-in default; pricing_model says "default".
    unknown = layered.cost("zeta", 1_000_000, 1_000_000, 0, 0)
    assert unknown["pricing_model"] == "default" and unknown["total_cost_micro"] == 16_000_000


def test_cost_rule_cached_and_reasoning(pricing_file: str) -> None:
    table = PriceTable.load(pricing_file, None)
    # thinker: in 1, out 4, cached 0.25, reasoning 8 ($/M).
    cost = table.cost("thinker", 1000, 500, 400, 200)
    assert cost["input_cost"] == pytest.approx(600 * 1 / 1e6)
    assert cost["cached_cost"] == pytest.approx(400 * 0.25 / 1e6)
    assert cost["reasoning_cost"] == pytest.approx(200 * 8 / 1e6)
    assert cost["output_cost"] == pytest.approx(300 * 4 / 1e6)
    assert cost["total_cost"] == pytest.approx((600 + 100 + 1600 + 1200) / 1e6)
    assert cost["total_cost_micro"] == 3500 and cost["currency"] == "USD"
    # No reasoning price: reasoning tokens are ordinary output; no cached price: input price.
    plain = table.cost("gpt-3.5-turbo", 1000, 500, 400, 200)
    assert plain["reasoning_cost"] == 0
    assert plain["output_cost"] == pytest.approx(500 * 1.5 / 1e6)
    assert plain["cached_cost"] == pytest.approx(400 * 0.5 / 1e6)


def test_total_cost_micro_rounds_half_up_exactly() -> None:
    table = PriceTable.load(None, None)
    # gpt-4o-mini input 0.15/M: 10 tokens = 1.5 micro-USD -> 2; 30 tokens = 4.5 -> 5.
    assert table.cost("gpt-4o-mini", 10, 0, 0, 0)["total_cost_micro"] == 2
    assert table.cost("gpt-4o-mini", 30, 0, 0, 0)["total_cost_micro"] == 5
    # 0.075/M cached: 20 tokens = 1.5 micro (binary floats would give 1.4999…).
    assert table.cost("gpt-4o-mini", 20, 0, 20, 0)["total_cost_micro"] == 2
    assert table.cost("gpt-4o-mini", 0, 0, 0, 0)["total_cost_micro"] == 0


def test_cached_and_reasoning_are_bounded_by_their_parent_counts(pricing_file: str) -> None:
    table = PriceTable.load(pricing_file, None)
    cost = table.cost("thinker", 100, 10, 500, 50)
    assert cost["input_cost"] == 0 and cost["output_cost"] == 0
    assert cost["cached_cost"] == pytest.approx(100 * 0.25 / 1e6)
    with pytest.raises(ValueError, match="non-negative"):
        table.cost("thinker", -1, 0, 0, 0)


@pytest.mark.parametrize(
    "document, message",
    [
        (b"{not json", "invalid JSON"),
        (orjson.dumps({"models": {"x": {"input_per_million": 1}}}), "output_per_million"),
        (
            orjson.dumps({"models": {"x": {"input_per_million": -1, "output_per_million": 1}}}),
            "greater than or equal to 0",
        ),
        (orjson.dumps({"modles": {}}), "modles"),
    ],
)
def test_bad_pricing_files_fail_at_load(tmp_path: Path, document: bytes, message: str) -> None:
    path = tmp_path / "pricing.json"
    path.write_bytes(document)
    with pytest.raises(PricingConfigError, match=message):
        PriceTable.load(str(path), None)


def test_missing_files_fail_at_load(tmp_path: Path) -> None:
    with pytest.raises(PricingConfigError, match="cannot read"):
        PriceTable.load(str(tmp_path / "absent.json"), None)
    with pytest.raises(PricingConfigError, match="catalog"):
        PriceTable.load(None, str(tmp_path / "absent.json"))
