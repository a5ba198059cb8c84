"""Logs are JSON lines without secrets; settings come from env over a TOML file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from services.common.config import CommonSettings, is_off, split_bind
from services.common.logging import configure_logging, scrub

TOKEN = "sk_" + "a" * 32 + "." + "b" * 64


def test_scrub_removes_secrets_but_keeps_key_id() -> None:
    text = scrub(f"auth {TOKEN} Bearer abc.def redis://:pw@h:6379 postgresql://u:pw@h/db")
    assert "b" * 64 not in text and "abc.def" not in text and ":pw@" not in text
    assert "sk_" + "a" * 32 in text


def test_log_lines_are_json_and_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test", "INFO")
    logging.getLogger("x").info("verified %s", TOKEN, extra={"request_id": "r1"})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["service"] == "test" and record["level"] == "INFO"
    assert record["request_id"] == "r1"
    assert "b" * 64 not in line


def test_env_wins_over_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "signalbox.toml"
    config.write_text('log_level = "DEBUG"\nredis_key_prefix = "file:"\n')
    monkeypatch.setenv("SIGNALBOX_CONFIG_FILE", str(config))
    monkeypatch.setenv("SIGNALBOX_REDIS_KEY_PREFIX", "env:")
    settings = CommonSettings()
    assert settings.log_level == "DEBUG"
    assert settings.redis_key_prefix == "env:"


def test_missing_config_file_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNALBOX_CONFIG_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError):
        CommonSettings()


def test_bind_and_off_helpers() -> None:
    assert split_bind("0.0.0.0:8088") == ("0.0.0.0", 8088)
    assert split_bind("[::1]:50051") == ("::1", 50051)
    with pytest.raises(ValueError):
        split_bind("8088")
    assert is_off("off") and is_off(" OFF ") and is_off(None) and not is_off("127.0.0.1:1")


def test_debug_level_keeps_sql_and_header_loggers_quiet() -> None:
    """aiosqlite's DEBUG lines contain SQL parameters (key hashes): never emitted."""
    configure_logging("test", "DEBUG")
    try:
        assert logging.getLogger("services.edge").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("httpcore").isEnabledFor(logging.DEBUG)
    finally:
        configure_logging("test", "INFO")
