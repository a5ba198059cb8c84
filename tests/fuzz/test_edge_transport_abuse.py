"""Abuse at the HTTP layer against a real edge process: huge headers, slowloris bodies."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.fuzz.conftest import BODY_TIMEOUT_S

pytestmark = pytest.mark.e2e


async def test_huge_headers_are_refused_and_the_edge_keeps_serving(edge_url: str) -> None:
    async with httpx.AsyncClient(base_url=edge_url, timeout=10) as client:
        try:
            response = await client.get("/_health/live", headers={"x-junk": "a" * 200_000})
            assert response.status_code == 431
            assert response.json()["error"]["code"] == "headers_too_large"
        except httpx.RemoteProtocolError:
            pass  # the server may also just close the connection: never a 5xx, never a hang
        assert (await client.get("/_health/live")).status_code == 200


async def test_a_slowloris_body_gets_408_within_the_body_timeout(edge_url: str) -> None:
    url = urlsplit(edge_url)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 64}]})
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer t\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    started = time.monotonic()
    writer.write(head.encode() + body[:10])
    await writer.drain()
    try:
        for byte in body[10:]:  # one byte every 0.5 s: far slower than the timeout allows
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.5)
            if reader.at_eof() or time.monotonic() - started > BODY_TIMEOUT_S + 3:
                break
    except ConnectionError:
        pass
    status_line = await asyncio.wait_for(reader.readline(), 10)
    payload = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    assert b'"code":"request_timeout"' in payload
