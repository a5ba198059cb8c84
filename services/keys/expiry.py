"""Expiry policy (spec keys §5 for new keys, §6 for `set_expiration`), pure functions of now."""

from __future__ import annotations

from dataclasses import dataclass

from services.keys.errors import KeyValidationError
from services.keys.settings import KeysSettings

# 9999-12-31T23:59:59Z: later instants overflow common date types downstream.
MAX_EXPIRES_AT = 253_402_300_799
EXPIRATION_REQUIRED_MESSAGE = (
    "Expiration required: provide expires_at or ttl_seconds (or configure default TTL)"
)


def _from_ttl(ttl_seconds: int, now: float) -> int:
    if ttl_seconds < 1:
        raise KeyValidationError("invalid_ttl", "ttl_seconds must be >= 1")
    expires_at = int(now) + ttl_seconds
    if expires_at > MAX_EXPIRES_AT:
        raise KeyValidationError("invalid_ttl", "ttl_seconds is too large")
    return expires_at


def _check_range(expires_at: int) -> int:
    if not 0 <= expires_at <= MAX_EXPIRES_AT:
        raise KeyValidationError(
            "invalid_expiration", f"expires_at must be between 0 and {MAX_EXPIRES_AT}"
        )
    return expires_at


@dataclass(frozen=True)
class ExpiryPolicy:
    """`SIGNALBOX_KEYS_DEFAULT_TTL_SECONDS` and whether every key must expire."""

    default_ttl_seconds: int | None = None
    required: bool = False

    @classmethod
    def from_settings(cls, settings: KeysSettings) -> ExpiryPolicy:
        return cls(settings.keys_default_ttl_seconds, settings.expiration_required)

    def for_new_key(
        self, *, expires_at: int | None, ttl_seconds: int | None, now: float
    ) -> int | None:
        """expires_at (future only), else ttl_seconds, else the default TTL, else none (§5)."""
        if expires_at is not None:
            if expires_at <= now:
                raise KeyValidationError("invalid_expiration", "expires_at must be in the future")
            return _check_range(expires_at)
        if ttl_seconds is not None:
            return _from_ttl(ttl_seconds, now)
        if self.default_ttl_seconds is not None:
            return _from_ttl(self.default_ttl_seconds, now)
        return self._no_expiry()

    def for_update(
        self, *, expires_at: int | None, ttl_seconds: int | None, now: float
    ) -> int | None:
        """expires_at wins and may be past (the key expires at once); neither clears the expiry."""
        if expires_at is not None:
            return _check_range(expires_at)
        if ttl_seconds is not None:
            return _from_ttl(ttl_seconds, now)
        return self._no_expiry()

    def _no_expiry(self) -> None:
        if self.required:
            raise KeyValidationError("expiration_required", EXPIRATION_REQUIRED_MESSAGE)
        return None
