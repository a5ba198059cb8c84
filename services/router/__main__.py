"""`python -m services.router [serve]` (console script `signalbox-router`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from pydantic import ValidationError

from services.common.grpc_server import run_until_signal
from services.common.logging import configure_logging
from services.common.tracing import process_telemetry
from services.router.app import RouterApp
from services.router.catalog import ConfigError
from services.router.knn_scorer.cli import register as register_knn_commands
from services.router.settings import RouterSettings

log = logging.getLogger("services.router")


async def serve(settings: RouterSettings) -> None:
    app = RouterApp(settings, load_settings=RouterSettings)
    try:
        await app.start()
    except BaseException:
        await app.stop()
        raise
    assert app.grpc is not None
    await run_until_signal(app.grpc, on_stop=app.release)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="signalbox-router", description="Signalbox router (Router Schema 1.1)."
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the gRPC and HTTP servers (default)")
    register_knn_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "run", None) is not None:  # export-model, build-index, eval
        configure_logging("router", os.environ.get("SIGNALBOX_LOG_LEVEL", "INFO"))
        return args.run(args)
    try:
        settings = RouterSettings()
    except ValidationError as exc:
        print(f"signalbox-router: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging("router", settings.log_level)
    if args.command in (None, "serve"):
        try:
            with process_telemetry("router", settings.router_metrics_bind):
                asyncio.run(serve(settings))
        except ConfigError as exc:
            log.error("invalid routing config; not starting", extra={"error": str(exc)})
            print(f"signalbox-router: invalid routing config: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
