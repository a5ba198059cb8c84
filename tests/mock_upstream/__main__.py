"""`python -m tests.mock_upstream --port N`: serve the mock upstream until SIGTERM."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn

from tests.mock_upstream.app import create_app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Mock OpenAI upstream for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
