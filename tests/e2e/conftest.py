"""End-to-end tests: the four services as real processes, the mock upstream as the provider."""

from tests.mock_upstream.fixture import (  # noqa: F401 (pytest fixtures)
    mock_upstream,
    mock_upstream_server,
)
