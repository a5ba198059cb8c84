"""Every configuration knob a service reads is documented in the README's configuration tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from services.analytics.settings import AnalyticsSettings
from services.edge.settings import EdgeSettings
from services.keys.settings import KeysSettings
from services.router.settings import RouterSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
DOCUMENTED = set(re.findall(r"`((?:SIGNALBOX|OPENAI|OTEL|HF)_[A-Z0-9_]+)`", README))


def env_names(settings: type[BaseSettings]) -> set[str]:
    """The variable each field is read from: its alias, else the prefix + field name."""
    prefix = settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.add(str(alias.choices[0]).upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


@pytest.mark.parametrize(
    "settings",
    [EdgeSettings, RouterSettings, KeysSettings, AnalyticsSettings],
    ids=lambda s: s.__name__,
)
def test_every_setting_is_in_the_readme(settings: type[BaseSettings]) -> None:
    missing = sorted(env_names(settings) - DOCUMENTED)
    assert not missing, f"document these in README.md's Configuration section: {missing}"
