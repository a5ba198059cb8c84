"""Ask a Signalbox router for a plan over HTTP (Router Schema 1.1 JSON), standard library only.

    python examples/router/http_client.py --url http://127.0.0.1:8090 \\
        --alias auto --prompt "What is the derivative of x**3?" --quality 1

Steps: `GET /capabilities`, `POST /route/plan` (the prompt goes in `conversation.summary`, so a
KNN alias can read it), `POST /route/feedback` with the quality the answer earned (optional; it
teaches the KNN index), `GET /catalog/models` twice to show the ETag round trip. Each step
prints one JSON line. A typed router error (`{"code": "NO_ROUTE", ...}`) exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any


class RouterError(Exception):
    """A Schema 1.1 error body: `code`, `message`, `request_id`, `policy_rev`, ..."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status} {body.get('code')}: {body.get('message')}")
        self.status, self.body = status, body


def call(
    base_url: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request: (status, JSON body or {}, lower-cased response headers)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base_url.rstrip("/") + path,
        data=data,
        method="GET" if body is None else "POST",
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, raw, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), exc.headers
    payload = json.loads(raw) if raw else {}
    if status >= 400 and "code" in payload:
        raise RouterError(status, payload)
    return status, payload, {k.lower(): v for k, v in got.items()}


def route_request(alias: str, prompt: str, prompt_tokens: int | None = None) -> dict[str, Any]:
    """A minimal RouteRequest; `summary` privacy lets the router read (only) the summary."""
    return {
        "schema_version": "1.1",
        "alias": alias,
        "api": "chat",
        "privacy_mode": "summary",
        "caps": ["text"],
        "conversation": {"summary": prompt[:512], "turns": 1},
        "estimates": {
            "prompt_tokens": prompt_tokens or len(prompt) // 4 + 10,
            "tokenizer_id": "chars4",
        },
    }


def show(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


def run(args: argparse.Namespace) -> int:
    url = args.url
    _, caps, _ = call(url, "/capabilities")
    show("capabilities", schema_versions=caps["schema_versions"], router=caps["router"])

    _, plan, headers = call(url, "/route/plan", route_request(args.alias, args.prompt))
    detail = plan["policy"].get("explain_detail", {})
    show(
        "plan",
        route_id=plan["route_id"],
        model=plan["upstream"]["model_id"],
        base_url=plan["upstream"]["base_url"],
        strategy=plan["policy"]["id"],
        explain=plan["policy"]["explain"],
        confidence=detail.get("confidence"),
        fallbacks=[f["model_id"] for f in plan.get("fallbacks", [])],
        plan_token=plan.get("stickiness", {}).get("plan_token"),
        x_route_cache=headers.get("x-route-cache"),
    )

    if args.quality is not None:
        feedback = {
            "route_id": plan["route_id"],
            "model_id": plan["upstream"]["model_id"],
            "success": True,
            "duration_ms": 850,
            "quality": args.quality,
        }
        status, ack, _ = call(url, "/route/feedback", feedback)
        show("feedback", status=status, accepted=ack["accepted"])

    _, catalog, headers = call(url, "/catalog/models")
    again, _, _ = call(url, "/catalog/models", headers={"if-none-match": headers["etag"]})
    show(
        "catalog",
        revision=catalog["revision"],
        models=[m["id"] for m in catalog["models"]],
        revalidated_status=again,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8090", help="router HTTP base URL")
    parser.add_argument("--alias", default="auto")
    parser.add_argument("--prompt", default="What is the capital of Australia?")
    parser.add_argument("--quality", type=float, help="send feedback with this quality (0..1)")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except RouterError as exc:
        show("error", status=exc.status, **exc.body)
        return 1


if __name__ == "__main__":
    sys.exit(main())
