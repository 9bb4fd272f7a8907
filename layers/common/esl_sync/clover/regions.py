"""Clover's regions and their two hosts each (docs/clover-api.md, "Hosts").

A merchant's browser signs in on the region's web host (``/oauth/v2/authorize``); the
app's server calls the region's REST host (items, ``/oauth/v2/token``,
``/oauth/v2/refresh``). One table, so that the install flow, the operator's input checks
and the poll agree on which host belongs to which. A loopback address (the local stack's
Clover simulator, which serves both) is its own authorize host.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Region:
    name: str
    api_host: str  # REST API: items, token exchange, refresh
    authorize_host: str  # the merchant's browser: /oauth/v2/authorize


REGIONS = (
    Region("North America", "api.clover.com", "www.clover.com"),
    Region("Europe", "api.eu.clover.com", "www.eu.clover.com"),
    Region("Latin America", "api.la.clover.com", "www.la.clover.com"),
    Region("sandbox", "apisandbox.dev.clover.com", "sandbox.dev.clover.com"),
)
CLOVER_API_HOSTS = frozenset(region.api_host for region in REGIONS)
"""Clover's REST API hosts: the only places a merchant's bearer token may be sent."""
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def authorize_base_url(api_base_url: str) -> str:
    """The base URL of the authorize page that belongs to a REST base URL
    (``https://api.eu.clover.com`` → ``https://www.eu.clover.com``); a loopback simulator
    serves both. A ``ValueError`` for a host that is neither."""
    parts = urlsplit(api_base_url)
    host = parts.hostname or ""
    for region in REGIONS:
        if host == region.api_host:
            return f"https://{region.authorize_host}"
    if host in LOOPBACK_HOSTS:
        return api_base_url.rstrip("/")
    raise ValueError(f"not a Clover REST host: {host!r}")
