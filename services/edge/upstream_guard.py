"""SSRF guard: which upstream base URLs a plan may send a request (and a provider key) to.

Clients never choose a base URL; plans do. A plan is the router's answer, and the router may be
run by another team, so a plan pointing at link-local, cloud-metadata, private or loopback
addresses is refused unless the operator allow-listed it (`SIGNALBOX_UPSTREAM_ALLOWLIST`). Hosts
the edge itself is configured with (`OPENAI_BASE_URL`, `SIGNALBOX_BACKENDS`) are trusted.

Host names are resolved (cached for `DNS_CACHE_S`) and every address must pass; httpx resolves
again when it connects, so a DNS answer that changes in between is not covered (documented).
A plan may also not name a `SIGNALBOX_*` variable as its `auth_env`: that would send our own
secrets (admin or internal token, database URL) to the upstream as a provider key.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.edge.upstream import Target

log = logging.getLogger(__name__)

DNS_CACHE_S = 60.0
# Names that reach a cloud metadata service without an address in a blocked range.
METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2"}
)
RESERVED_AUTH_ENV_PREFIX = "SIGNALBOX_"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_internal(address: IpAddress) -> bool:
    """Addresses a public-provider plan has no business reaching."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


@dataclass(frozen=True)
class Allowlist:
    """`SIGNALBOX_UPSTREAM_ALLOWLIST`: CIDRs, exact host names and `*.suffix` wildcards."""

    networks: tuple[IpNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str | None, trusted_urls: Iterable[str] = ()) -> Allowlist:
        networks: list[IpNetwork] = []
        hosts: set[str] = set()
        suffixes: list[str] = []
        for entry in (e.strip().lower() for e in (spec or "").split(",")):
            if not entry:
                continue
            if entry.startswith("*."):
                suffixes.append(entry[1:])
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry)
        hosts.update(h for url in trusted_urls if (h := host_of(url)))
        return cls(tuple(networks), frozenset(hosts), tuple(suffixes))

    def allows_host(self, host: str) -> bool:
        return host in self.hosts or any(host.endswith(s) for s in self.suffixes)

    def allows_address(self, address: IpAddress) -> bool:
        return any(address in net for net in self.networks if net.version == address.version)


def host_of(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower().rstrip(".") if host else None


class UpstreamGuard:
    """Filters a plan's targets down to the ones the edge may contact."""

    def __init__(self, allowlist: Allowlist) -> None:
        self._allowlist = allowlist
        self._resolved: dict[str, tuple[float, tuple[IpAddress, ...]]] = {}

    async def permitted(self, targets: Sequence[Target]) -> list[Target]:
        """The targets that pass, in order; refusals are logged (they mean a bad plan)."""
        allowed = []
        for target in targets:
            reason = await self.refusal(target)
            if reason is None:
                allowed.append(target)
            else:
                log.warning(
                    "upstream refused",
                    extra={
                        "host": host_of(target.base_url),
                        "model_id": target.model_id,
                        "reason": reason,
                    },
                )
        return allowed

    async def refusal(self, target: Target) -> str | None:
        """Why `target` must not be contacted, or None."""
        if target.auth_env and target.auth_env.upper().startswith(RESERVED_AUTH_ENV_PREFIX):
            return "auth_env names a Signalbox setting"
        parts = urlsplit(target.base_url)
        host = host_of(target.base_url)
        if parts.scheme not in ("http", "https") or host is None:
            return "base_url is not an http(s) URL"
        if self._allowlist.allows_host(host):
            return None
        if host in METADATA_HOSTS:
            return "metadata host"
        addresses = await self._addresses(host)
        if not addresses:
            return "host does not resolve"
        for address in addresses:
            if is_internal(address) and not self._allowlist.allows_address(address):
                return f"internal address {address}"
        return None

    async def _addresses(self, host: str) -> tuple[IpAddress, ...]:
        try:
            return (ipaddress.ip_address(host),)
        except ValueError:
            pass
        cached = self._resolved.get(host)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
        except OSError:
            return ()
        addresses = tuple({ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos})
        self._resolved[host] = (now + DNS_CACHE_S, addresses)
        return addresses
