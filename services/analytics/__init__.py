"""The analytics service: idempotent ingest, queries, aggregates and exports (analytics.md)."""
