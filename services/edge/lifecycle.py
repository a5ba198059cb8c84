"""Process lifecycle state shared by the server's signal handler and the readiness route."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Lifecycle:
    """`draining` is set by SIGTERM/SIGINT before the drain starts; readiness then says 503."""

    draining: bool = False
