"""An httpx transport that sends over aiohttp: the upstream pool without httpcore's cost.

Profiled under load, httpcore's pool (a linear scan with a readability poll of every idle
connection per request, anyio stream wrappers) was half of the edge's CPU; the same request
through aiohttp costs about a tenth. The proxy keeps speaking httpx (requests, responses,
exceptions), so only the bytes on the wire move to aiohttp. httpx timeouts arrive in
`request.extensions["timeout"]` and map onto aiohttp's; aiohttp failures map onto the httpx
exceptions the pipeline already classifies (connect, timeout, closed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx

# Headers aiohttp would otherwise add on its own (the proxy sets what it means to send).
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc)) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout("upstream read timed out") from exc

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # back to the pool
        else:
            self._response.close()  # abandoned mid-body (client gone): drop the connection


def _timeout(request: httpx.Request) -> aiohttp.ClientTimeout:
    given = request.extensions.get("timeout", {})
    return aiohttp.ClientTimeout(
        total=None,
        connect=given.get("pool"),
        sock_connect=given.get("connect"),
        sock_read=given.get("read"),
    )


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (keep-alive pool) behind an `httpx.AsyncClient`."""

    def __init__(self, *, max_connections: int, keepalive_s: float = 5.0) -> None:
        self._limit = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit, keepalive_timeout=self._keepalive_s, ttl_dns_cache=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        try:
            body: bytes | httpx.AsyncByteStream = request.content
        except httpx.RequestNotRead:
            body = request.stream  # type: ignore[assignment]
        try:
            response = await session.request(
                request.method,
                str(request.url),
                data=body,
                headers=request.headers.multi_items(),
                timeout=_timeout(request),
                allow_redirects=False,
                compress=None,
            )
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc), request=request) from exc
        except aiohttp.ServerTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        except TimeoutError as exc:
            raise httpx.ConnectTimeout("upstream connect timed out", request=request) from exc
        except aiohttp.InvalidURL as exc:
            raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
