"""Token format, hashing and the constant-time comparison (keys §1-§3); pure, no I/O."""

from __future__ import annotations

import hashlib
import re

import pytest

from services.keys.tokens import hash_secret, mint_key, parse_token, secret_matches

ID = "0123456789abcdef0123456789abcdef"


def test_minted_token_shape_and_hash() -> None:
    key = mint_key()
    match = re.fullmatch(r"sk_([0-9a-f]{32})\.([0-9a-f]{64})", key.token)
    assert match and match.group(1) == key.id
    assert key.id[12] == "4"  # uuid4
    secret = bytes.fromhex(match.group(2))
    assert key.hash_hex == hashlib.sha256(bytes.fromhex(key.salt_hex) + secret).hexdigest()
    assert len(key.salt_hex) == 32
    assert key.token not in repr(key)


def test_minted_keys_differ() -> None:
    a, b = mint_key(), mint_key()
    assert a.id != b.id and a.salt_hex != b.salt_hex and a.token != b.token


@pytest.mark.parametrize(
    "token",
    [
        "",
        f"{ID}.{'a' * 64}",
        f"SK_{ID}.{'a' * 64}",
        f"pk_{ID}.{'a' * 64}",
        f"sk_{ID}{'a' * 64}",
        f"sk_{ID}.{'a' * 32}.{'a' * 32}",
        f"sk_{ID[:-1]}.{'a' * 64}",
        f"sk_{ID}0.{'a' * 64}",
        f"sk_{ID[:-1]}g.{'a' * 64}",
        f"sk_{ID}.{'a' * 31}",
        f"sk_{ID}.{'a' * 30}",
        f"sk_{ID}.{'a' * 33}",
        f"sk_{ID}.{'a' * 63}z",
        f"sk_{ID}.{'a' * 64}\n",
        f" sk_{ID}.{'a' * 64}",
        f"sk_{ID}.",
        "sk_.",
    ],
)
def test_invalid_formats(token: str) -> None:
    assert parse_token(token) is None


@pytest.mark.parametrize("secret_len", [32, 64, 128])
def test_valid_formats(secret_len: int) -> None:
    parsed = parse_token(f"sk_{ID.upper()}.{'Ab' * (secret_len // 2)}")
    assert parsed is not None
    assert parsed.key_id == ID
    assert parsed.secret == bytes.fromhex("ab" * (secret_len // 2))
    assert repr(parsed) == f"ParsedToken(key_id='{ID}')"


def test_secret_matches_only_the_right_secret() -> None:
    key = mint_key()
    parsed = parse_token(key.token)
    assert parsed is not None
    assert secret_matches(key.salt_hex, key.hash_hex, parsed.secret)
    assert not secret_matches(key.salt_hex, key.hash_hex, parsed.secret[:-1] + b"\x00")
    assert not secret_matches(None, None, parsed.secret)
    assert hash_secret(key.salt_hex, parsed.secret) == key.hash_hex
