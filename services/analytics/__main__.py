"""`python -m services.analytics` (`signalbox-analytics`): serve until SIGTERM/SIGINT, drain."""

from __future__ import annotations

import asyncio

from services.analytics.app import AnalyticsApp
from services.analytics.settings import AnalyticsSettings
from services.common.grpc_server import run_until_signal
from services.common.logging import configure_logging
from services.common.tracing import process_telemetry


async def serve(settings: AnalyticsSettings) -> None:
    app = AnalyticsApp(settings)
    await app.start()
    await run_until_signal(app.server, on_stop=app.close)


def main() -> None:
    settings = AnalyticsSettings()
    configure_logging("analytics", settings.log_level)
    with process_telemetry("analytics", settings.analytics_metrics_bind):
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
