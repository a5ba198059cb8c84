"""API key tokens: `sk_<32 hex id>.<64 hex secret>` (spec keys §1-§3).

Only a per-key random salt and SHA-256(salt ‖ secret bytes) are stored. The token exists in
memory just long enough to be returned once; its `repr` hides it so it cannot leak into logs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass, field

TOKEN_PREFIX = "sk_"
_ID = re.compile(r"[0-9a-fA-F]{32}")
_SECRET = re.compile(r"(?:[0-9a-fA-F]{2}){16,}")
_SALT_BYTES = 16
_SECRET_BYTES = 32

# Compared against when the id is unknown, so a miss costs the same work as a hit.
_DUMMY_SALT_HEX = secrets.token_hex(_SALT_BYTES)
_DUMMY_HASH_HEX = secrets.token_hex(hashlib.sha256().digest_size)


@dataclass(frozen=True)
class MintedKey:
    """A fresh key: what goes to the database plus the token shown once."""

    id: str
    salt_hex: str
    hash_hex: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class ParsedToken:
    """A token that passed the format rules; the id is lowercased for lookup."""

    key_id: str
    secret: bytes = field(repr=False)


def hash_secret(salt_hex: str, secret: bytes) -> str:
    """SHA-256(salt ‖ secret) as hex; the secret is high-entropy so no slow KDF is needed."""
    return hashlib.sha256(bytes.fromhex(salt_hex) + secret).hexdigest()


def mint_key() -> MintedKey:
    """A uuid4 id and 32 CSPRNG bytes of secret."""
    key_id = uuid.uuid4().hex
    secret = secrets.token_bytes(_SECRET_BYTES)
    salt_hex = secrets.token_hex(_SALT_BYTES)
    return MintedKey(
        id=key_id,
        salt_hex=salt_hex,
        hash_hex=hash_secret(salt_hex, secret),
        token=f"{TOKEN_PREFIX}{key_id}.{secret.hex()}",
    )


def parse_token(token: str) -> ParsedToken | None:
    """`sk_` prefix, exactly one `.`, a 32-hex id and a secret of at least 32 hex characters.

    A secret of odd length cannot be decoded to bytes and is rejected as a format error too.
    """
    if not token.startswith(TOKEN_PREFIX) or token.count(".") != 1:
        return None
    key_id, _, secret = token.removeprefix(TOKEN_PREFIX).partition(".")
    if not _ID.fullmatch(key_id) or not _SECRET.fullmatch(secret):
        return None
    return ParsedToken(key_id=key_id.lower(), secret=bytes.fromhex(secret))


def secret_matches(salt_hex: str | None, hash_hex: str | None, secret: bytes) -> bool:
    """Constant-time check; with no stored hash (unknown id) a dummy one is compared instead."""
    if salt_hex is None or hash_hex is None:
        hmac.compare_digest(hash_secret(_DUMMY_SALT_HEX, secret), _DUMMY_HASH_HEX)
        return False
    return hmac.compare_digest(hash_secret(salt_hex, secret), hash_hex)
