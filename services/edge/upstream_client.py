"""The upstream HTTP client: one aiohttp keep-alive pool, POSTs only, nothing else on top.

Profiled under load, httpcore's pool (a linear scan with a readability poll of every idle
connection per request, anyio stream wrappers) was half of the edge's CPU; aiohttp costs
about a tenth of that. httpx's client layer on top of aiohttp (request and URL models,
header merging, auth and redirect hooks, response wrappers) was still ≈ 8 % of the edge's
samples, so attempts talk to aiohttp directly. Failures keep httpx's exception types
(connect, timeout, closed), which the attempt loop, the stream relay and MCP classify.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import httpx

USER_AGENT = "signalbox-edge"
# Sent on every attempt; aiohttp decodes the body (as httpx did for the same header).
_DEFAULT_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
# Headers aiohttp would otherwise add on its own (the proxy sets what it means to send).
_SKIP_AUTO_HEADERS = ("Accept", "Content-Type")


@dataclass(frozen=True)
class UpstreamTimeouts:
    """`total_s` bounds waiting for a pooled connection and each body read; `connect_s` the
    TCP connect itself. The attempt's own deadline (upstream.py) bounds the whole."""

    total_s: float
    connect_s: float

    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, connect=self.total_s, sock_connect=self.connect_s, sock_read=self.total_s
        )


class UpstreamResponse:
    """An upstream answer, body unread; `aclose()` must follow (returns the connection)."""

    __slots__ = ("_response", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased names, the first value of each (read only on failures)."""
        headers: dict[str, str] = {}
        for name, value in self._response.headers.items():
            headers.setdefault(name.lower(), value)
        return headers

    async def read_chunk(self) -> bytes:
        """The body bytes that arrived next, b"" at the end. Cancel-safe: a read cancelled
        while waiting (a keep-alive falls due) loses nothing, so it needs no task of its own."""
        try:
            return await self._response.content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _read_error(exc) from exc

    async def aread(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _read_error(exc) from exc

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # back to the pool
        else:
            self._response.close()  # abandoned mid-body (client gone): drop the connection


def _read_error(exc: aiohttp.ClientError | TimeoutError) -> httpx.TransportError:
    """A body read failure as the httpx error the stream relay and MCP classify."""
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(str(exc))
    if isinstance(exc, aiohttp.ClientError):
        return httpx.ReadError(str(exc))
    return httpx.ReadTimeout("upstream read timed out")


def _send_error(exc: aiohttp.ClientError | TimeoutError) -> httpx.TransportError:
    """A failure before any response as the httpx error `upstream._open` classifies."""
    match exc:
        case aiohttp.ClientConnectorError():
            return httpx.ConnectError(str(exc))
        case aiohttp.ConnectionTimeoutError():
            return httpx.ConnectTimeout(str(exc))
        case aiohttp.ServerTimeoutError():
            return httpx.ReadTimeout(str(exc))
        case TimeoutError():
            return httpx.ConnectTimeout("upstream connect timed out")
        case aiohttp.InvalidURL():
            return httpx.UnsupportedProtocol(str(exc))
        case aiohttp.ServerDisconnectedError() | aiohttp.ClientOSError():
            return httpx.RemoteProtocolError(str(exc))
        case _:
            return httpx.ReadError(str(exc))


class UpstreamClient:
    """One aiohttp session (keep-alive pool), opened on first use, for every upstream."""

    def __init__(
        self, *, max_connections: int, timeouts: UpstreamTimeouts, keepalive_s: float = 5.0
    ) -> None:
        self._limit = max_connections
        self._keepalive_s = keepalive_s
        self._timeout = timeouts.client_timeout()
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit, keepalive_timeout=self._keepalive_s, ttl_dns_cache=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=_DEFAULT_HEADERS,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
                trust_env=False,
            )
        return self._session

    async def post(self, url: str, payload: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """Send and wait for the status line and headers; the body is the caller's to read."""
        try:
            response = await self._open().post(
                url, data=payload, headers=headers, allow_redirects=False
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _send_error(exc) from exc
        return UpstreamResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
