"""Per-key rate limits and spend budgets at the edge (keys.md §4)."""

from services.edge.limits.limiter import Admission, Limiter, ratelimit_headers
from services.edge.limits.store import MemoryCounters, RedisCounters

__all__ = ["Admission", "Limiter", "MemoryCounters", "RedisCounters", "ratelimit_headers"]
