"""`python -m services.keys` / `signalbox-keys`: serve until SIGTERM or SIGINT, then drain."""

from __future__ import annotations

import asyncio
import logging

from services.common.grpc_server import run_until_signal
from services.common.logging import configure_logging
from services.common.tracing import process_telemetry
from services.keys.app import KeysApp
from services.keys.settings import KeysSettings

log = logging.getLogger("services.keys")


async def serve(settings: KeysSettings) -> None:
    """Exits with status 1 (after a JSON log line saying why) when the service cannot start."""
    app = KeysApp(settings)
    try:
        await app.start()
    except Exception:
        log.exception("keys service failed to start", extra={"bind": settings.keys_bind})
        raise SystemExit(1) from None
    await run_until_signal(app.server, on_stop=app.close)


def main() -> None:
    settings = KeysSettings()
    configure_logging("keys", settings.log_level)
    with process_telemetry("keys", settings.keys_metrics_bind):
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
