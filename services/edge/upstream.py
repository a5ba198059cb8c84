"""Upstream attempts (router-schema-1.1 §8): one POST per target, fallbacks while nothing is sent.

An attempt "opens" once the upstream has answered 2xx and produced its first body byte (SSE)
or its whole body (JSON). Until then every retryable failure moves on to the next target; the
caller commits a status to the client only after `open_first` returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx

from services.common.pb import router_pb2
from services.edge.errors import ApiError
from services.edge.upstream_client import UpstreamClient, UpstreamResponse

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
MAX_ERROR_BODY_BYTES = 64 * 1024
DEFAULT_AUTH_ENV = "OPENAI_API_KEY"

FailureKind = Literal["connect", "timeout", "status", "closed"]


@dataclass(frozen=True)
class Target:
    """One place a request may be sent: the plan's upstream or one of its fallbacks."""

    base_url: str
    mode: str
    model_id: str
    auth_env: str | None
    headers: Mapping[str, str]
    fallback_index: int | None


def plan_targets(plan: router_pb2.RoutePlan) -> list[Target]:
    """The upstream, then the fallbacks in order, at most four; headers go to the primary only."""
    up = plan.upstream
    targets = [
        Target(
            up.base_url.rstrip("/"),
            up.mode,
            up.model_id,
            up.auth_env if up.HasField("auth_env") else None,
            dict(up.headers),
            None,
        )
    ]
    for index, fb in enumerate(plan.fallbacks[: MAX_ATTEMPTS - 1]):
        auth_env = fb.auth_env if fb.HasField("auth_env") else None
        targets.append(Target(fb.base_url.rstrip("/"), fb.mode, fb.model_id, auth_env, {}, index))
    return targets


def provider_credential(
    target: Target, *, passthrough_bearer: str | None, openai_api_key: str | None
) -> str | None:
    """Passthrough: the client's bearer. Managed: the target's `auth_env`, else OPENAI_API_KEY.

    A named `auth_env` that is unset is a configuration error rather than a reason to send
    another provider's key to this upstream.
    """
    if passthrough_bearer is not None:
        return passthrough_bearer
    if target.auth_env is None:
        return openai_api_key
    value = openai_api_key if target.auth_env == DEFAULT_AUTH_ENV else None
    value = value or os.environ.get(target.auth_env)
    if not value:
        raise ApiError(
            500, "provider_key_missing", f"Provider key {target.auth_env} is not configured"
        )
    return value


class AttemptFailed(Exception):
    """One attempt that produced nothing for the client; `retryable` decides if we move on."""

    def __init__(
        self,
        kind: FailureKind,
        detail: str,
        *,
        status: int | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.body = body
        self.headers = dict(headers or {})

    @property
    def retryable(self) -> bool:
        return self.kind != "status" or self.status == 429 or (self.status or 0) >= 500

    @property
    def outcome(self) -> str:
        """Short label for logs and feedback `errors[]`."""
        return f"http_{self.status}" if self.kind == "status" else self.kind


@dataclass
class OpenAttempt:
    """A 2xx upstream response with its first bytes in hand; the caller must `aclose()` it."""

    target: Target
    response: UpstreamResponse
    sent_at: float
    deadline: float
    first: bytes
    # Chunks replayed from memory instead of the live body (MCP's final round).
    chunks: AsyncIterator[bytes] | None = None

    async def next_chunk(self) -> bytes | None:
        """The next body chunk, None at EOF; raises TimeoutError past the attempt deadline.
        Cancel-safe like `UpstreamResponse.read_chunk` (a replay never waits)."""
        remaining = self.deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError("upstream attempt deadline passed")
        async with asyncio.timeout(remaining):
            if self.chunks is not None:
                return await anext(self.chunks, None)
            return await self.response.read_chunk() or None

    async def aclose(self) -> None:
        await self.response.aclose()


@dataclass
class AttemptLog:
    """What the failed attempts cost, for headers, analytics and feedback."""

    failures: list[tuple[Target, AttemptFailed]] = field(default_factory=list)
    failed_seconds: float = 0.0

    @property
    def errors(self) -> list[str]:
        """`"<model_id>: <outcome>"` per failed attempt (the RouteFeedback `errors[]` form)."""
        return [f"{t.model_id}: {f.outcome}" for t, f in self.failures]


async def _open(
    client: UpstreamClient,
    target: Target,
    path: str,
    payload: bytes,
    headers: Mapping[str, str],
    *,
    stream: bool,
    timeout_s: float,
) -> OpenAttempt:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    url = f"{target.base_url}{path}"
    sent_at = time.perf_counter()
    try:
        async with asyncio.timeout_at(deadline):
            response = await client.post(url, payload, headers)
            try:
                return await _first_bytes(target, response, sent_at, deadline, stream=stream)
            except BaseException:
                await response.aclose()
                raise
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
        raise AttemptFailed("connect", f"{type(exc).__name__}: {exc}") from None
    except (httpx.TimeoutException, TimeoutError):
        raise AttemptFailed("timeout", "no response before the attempt timeout") from None
    except httpx.TransportError as exc:
        raise AttemptFailed("closed", f"{type(exc).__name__}: {exc}") from None


async def _first_bytes(
    target: Target, response: UpstreamResponse, sent_at: float, deadline: float, *, stream: bool
) -> OpenAttempt:
    if not 200 <= response.status_code < 300:
        body = b""
        while len(body) < MAX_ERROR_BODY_BYTES and (chunk := await response.read_chunk()):
            body += chunk
        raise AttemptFailed(
            "status",
            f"upstream answered {response.status_code}",
            status=response.status_code,
            body=body[:MAX_ERROR_BODY_BYTES],
            headers=response.headers,
        )
    if not stream:
        body = await response.aread()
        return OpenAttempt(target, response, sent_at, deadline, body)
    chunk = await response.read_chunk()
    if not chunk:
        raise AttemptFailed("closed", "upstream closed before the first body byte")
    return OpenAttempt(target, response, sent_at, deadline, chunk)


def all_failed_error(last: AttemptFailed) -> ApiError:
    """router-schema §8: the last failure decides the client's status."""
    if last.kind == "status" and last.status == 429:
        retry_after = last.headers.get("retry-after", "")
        seconds = int(retry_after) if retry_after.isdigit() else None
        return ApiError(
            429, "upstream_rate_limited", "Upstream rate limited the request", retry_after=seconds
        )
    if last.kind == "connect":
        return ApiError(502, "upstream_unreachable", "Upstream unreachable")
    if last.kind == "timeout":
        return ApiError(504, "upstream_timeout", "Upstream timed out")
    return ApiError(502, "upstream_error", f"Upstream failed: {last.detail}")


async def open_first(
    client: UpstreamClient,
    targets: list[Target],
    build: Callable[[Target], tuple[str, bytes, Mapping[str, str]]],
    *,
    stream: bool,
    timeout_s: float,
    attempts: AttemptLog,
) -> OpenAttempt:
    """Try each target in order; return the first that opens, or raise the mapped failure.

    `build(target)` gives `(path, payload, headers)` so each attempt is translated for its
    own `mode` and `model_id`. A non-retryable failure (a 4xx other than 429) is re-raised
    as `AttemptFailed` for the caller to relay.
    """
    last: AttemptFailed | None = None
    for target in targets:
        path, payload, headers = build(target)
        started = time.perf_counter()
        try:
            return await _open(
                client, target, path, payload, headers, stream=stream, timeout_s=timeout_s
            )
        except AttemptFailed as failure:
            attempts.failed_seconds += time.perf_counter() - started
            attempts.failures.append((target, failure))
            log.info(
                "upstream attempt failed",
                extra={"model_id": target.model_id, "outcome": failure.outcome},
            )
            if not failure.retryable:
                raise
            last = failure
    assert last is not None
    log.warning("all upstream attempts failed", extra={"errors": attempts.errors})
    raise all_failed_error(last)
