"""What a key is (spec keys §2, §6) and the validation of everything fixed at generation.

Scopes, rate limits, budget, tenant and project cannot change after generation (§6): they are
checked once here, before any row is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

from services.keys.errors import KeyValidationError
from services.keys.scopes import validate_scopes

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
MAX_TEXT_LENGTH = 256
MAX_BATCH = 1000


@dataclass(frozen=True)
class RateLimit:
    """Requests and tokens per UTC minute; either may be absent."""

    rpm: int | None = None
    tpm: int | None = None

    def to_json(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RateLimit:
        return cls(rpm=value.get("rpm"), tpm=value.get("tpm"))


@dataclass(frozen=True)
class Budget:
    """Spend allowed per UTC day or month, in micro-USD."""

    limit_micro: int
    period: Period

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Budget:
        return cls(limit_micro=int(value["limit_micro"]), period=value["period"])


@dataclass(frozen=True)
class KeyAttributes:
    """Everything a key is issued with besides its label and expiry."""

    scopes: tuple[str, ...] | None = None
    rate_limit: RateLimit | None = None
    budget: Budget | None = None
    tenant: str | None = None
    project: str | None = None


@dataclass(frozen=True)
class KeyRecord:
    """One `api_keys` row without its salt and hash: what `KeyInfo` shows."""

    id: str
    label: str | None
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    attributes: KeyAttributes

    def is_expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def validate_text(field: str, value: str | None) -> str | None:
    """Labels, tenants and projects: bounded so one key cannot bloat every listing."""
    if value is not None and len(value) > MAX_TEXT_LENGTH:
        raise KeyValidationError(
            "invalid_request", f"{field} must be at most {MAX_TEXT_LENGTH} characters"
        )
    return value


def validate_rate_limit(rpm: int | None, tpm: int | None) -> RateLimit | None:
    """Each limit, when given, is a positive count; an empty limit is no limit."""
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and value < 1:
            raise KeyValidationError("invalid_request", f"rate_limit.{name} must be >= 1")
    return None if rpm is None and tpm is None else RateLimit(rpm=rpm, tpm=tpm)


def validate_budget(limit_micro: int, period: str) -> Budget:
    if limit_micro < 1:
        raise KeyValidationError("invalid_request", "budget.limit_micro must be >= 1")
    if period not in PERIODS:
        raise KeyValidationError("invalid_request", "budget.period must be 'day' or 'month'")
    return Budget(limit_micro=limit_micro, period=cast(Period, period))


def validate_attributes(
    *,
    scopes: Iterable[str] | None,
    rate_limit: RateLimit | None,
    budget: Budget | None,
    tenant: str | None,
    project: str | None,
) -> KeyAttributes:
    checked = validate_scopes(scopes)
    return KeyAttributes(
        scopes=tuple(checked) if checked else None,
        rate_limit=rate_limit,
        budget=budget,
        tenant=validate_text("tenant", tenant),
        project=validate_text("project", project),
    )


def batch_labels(labels: list[str], label_prefix: str | None) -> list[str]:
    """1-1000 labels, trimmed, empty ones dropped, then prefixed; input order is kept."""
    if len(labels) > MAX_BATCH:
        raise KeyValidationError("invalid_request", f"labels must have at most {MAX_BATCH} entries")
    trimmed = [label.strip() for label in labels]
    kept = [f"{label_prefix or ''}{label}" for label in trimmed if label]
    if not kept:
        raise KeyValidationError(
            "invalid_request", "labels must include at least one non-empty entry"
        )
    return [cast(str, validate_text("label", label)) for label in kept]
