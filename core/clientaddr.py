"""Who is on the other end of an HTTP request: the socket's peer, or the X-Forwarded-For entry
added by the last of the configured trusted proxies, never a header a client could simply send."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

__all__ = ["ClientAddress"]


class ClientAddress:
    def __init__(self, trusted_proxies: Sequence[str] = ()) -> None:
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def __call__(self, request: web.Request) -> str:
        peer = request.remote or "unknown"
        if not self._proxies or not self._trusted(peer):
            return peer
        # Walk back from the nearest hop: the first address not one of our proxies is the client.
        hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._proxies)
