"""`python -m services.edge`: serve the edge with uvicorn on `SIGNALBOX_EDGE_BIND`.

SIGTERM flips readiness to 503 at once, lets in-flight requests finish within
`SIGNALBOX_SHUTDOWN_GRACE_SECONDS`, then the lifespan flushes analytics and closes clients.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

import uvicorn
from pydantic import ValidationError

from services.common.config import split_bind
from services.common.logging import configure_logging
from services.edge.lifecycle import Lifecycle
from services.edge.settings import EdgeSettings

log = logging.getLogger("services.edge")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _DrainingServer(uvicorn.Server):
    """Marks the edge as draining on SIGTERM/SIGINT; a completed drain exits with status 0."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Uvicorn re-raises the signal after its shutdown (exit status -15); an orderly
        # drain is a success, so the handlers are only installed and restored here.
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._lifecycle.draining = True
        super().handle_exit(sig, frame)


def _config_errors(exc: ValidationError) -> str:
    """Field and reason only: the rejected value may be a secret (a too-short admin token)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
        for err in exc.errors()
    )


def _apply_flags(argv: list[str]) -> None:
    """`--mcp-config PATH` is `SIGNALBOX_MCP_CONFIG`; settings keep one source, the environment."""
    parser = argparse.ArgumentParser(prog="python -m services.edge")
    parser.add_argument("--mcp-config", help="MCP servers file (SIGNALBOX_MCP_CONFIG)")
    flags, _ = parser.parse_known_args(argv)
    if flags.mcp_config:
        os.environ["SIGNALBOX_MCP_CONFIG"] = flags.mcp_config


def main() -> None:
    _apply_flags(sys.argv[1:])
    try:
        settings = EdgeSettings()
    except (ValidationError, ValueError) as exc:
        message = _config_errors(exc) if isinstance(exc, ValidationError) else str(exc)
        configure_logging("edge")
        log.error("invalid configuration: %s", message)
        print(f"signalbox edge: invalid configuration: {message}", file=sys.stderr)
        sys.exit(1)
    configure_logging("edge", settings.log_level)
    # Imported only now so a configuration error exits before the app's heavy imports.
    from services.common.tracing import process_telemetry
    from services.edge.app import create_app

    host, port = split_bind(settings.edge_bind)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        # Named rather than "auto": "auto" falls back to the asyncio loop and the pure-Python
        # h11 parser without a word when uvloop or httptools is missing.
        loop="uvloop",
        http="httptools",
        lifespan="on",
        # The edge applies SIGNALBOX_TRUSTED_PROXIES to X-Forwarded-For itself; uvicorn's own
        # handling would first rewrite the client address for any loopback peer.
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    server = _DrainingServer(config, app.state.lifecycle)
    with process_telemetry("edge"):  # tracing per OTEL_*; metrics are the app's GET /metrics
        server.run()
    if not server.started:
        sys.exit(1)


if __name__ == "__main__":
    main()
