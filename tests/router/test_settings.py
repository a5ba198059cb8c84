"""RouterSettings reads the names of the spec README's environment table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.router.settings import RouterSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SIGNALBOX_") or name == "OPENAI_BASE_URL":
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = RouterSettings()
    assert (s.router_bind, s.router_http_bind) == ("0.0.0.0:50051", "0.0.0.0:8090")
    assert s.upstream_mode == "responses"
    assert s.openai_base_url == "https://api.openai.com/v1"
    assert s.router_default_upstream is True
    assert s.knn_index_dir == Path("data/knn")
    assert s.embedding_model == "sentence-transformers/all-MiniLM-L6-v2"


def test_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "SIGNALBOX_ROUTER_BIND": "127.0.0.1:1",
        "SIGNALBOX_ROUTER_HTTP_BIND": "127.0.0.1:2",
        "SIGNALBOX_ROUTER_ALIASES": str(tmp_path / "a.json"),
        "SIGNALBOX_CATALOG_PATH": str(tmp_path / "c.json"),
        "SIGNALBOX_BACKENDS": "prefix=x-,base=http://x",
        "SIGNALBOX_UPSTREAM_MODE": "CHAT",
        "OPENAI_BASE_URL": "http://proxy:9000/v1/",
        "SIGNALBOX_ROUTER_DEFAULT_UPSTREAM": "off",
        "SIGNALBOX_KNN_TRAIN_PATH": str(tmp_path / "t.jsonl"),
        "SIGNALBOX_KNN_INDEX_DIR": str(tmp_path / "knn"),
        "SIGNALBOX_EMBEDDING_MODEL": "local/minilm",
        "SIGNALBOX_ADMIN_TOKEN": "t" * 32,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = RouterSettings()
    assert (s.router_bind, s.router_http_bind) == ("127.0.0.1:1", "127.0.0.1:2")
    assert s.router_aliases == tmp_path / "a.json" and s.catalog_path == tmp_path / "c.json"
    assert s.backends == "prefix=x-,base=http://x"
    assert s.upstream_mode == "chat"
    assert s.openai_base_url == "http://proxy:9000/v1"
    assert s.router_default_upstream is False
    assert s.knn_train_path == tmp_path / "t.jsonl" and s.knn_index_dir == tmp_path / "knn"
    assert s.embedding_model == "local/minilm"
    assert s.admin_token == "t" * 32 and "t" * 32 not in repr(s)


@pytest.mark.parametrize(
    ("name", "value"),
    [("SIGNALBOX_UPSTREAM_MODE", "grpc"), ("OPENAI_BASE_URL", "api.openai.com")],
)
def test_bad_values_fail_at_start(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        RouterSettings()


def test_blank_paths_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNALBOX_ROUTER_ALIASES", " ")
    monkeypatch.setenv("SIGNALBOX_BACKENDS", "")
    s = RouterSettings()
    assert s.router_aliases is None and s.backends is None
