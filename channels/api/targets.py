"""Where the API channel may POST callbacks: never to this machine's or its network's own services.

A `callback_url` is chosen by whoever holds an API key; without a check, relaybot would POST (and
report the answer's status of) requests to loopback services, the private network, or the cloud
metadata address (169.254.169.254): server-side request forgery. Addresses are checked as
connected: an IP written in the URL before anything is sent, a name on every address it resolves
to at connect time (a name that resolves to a public address when checked and to a private one
when used cannot slip through). Redirects are not followed (`allow_redirects=False` at the call).
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["CallbackTargetRefused", "PublicAddressResolver", "refusal"]


class CallbackTargetRefused(OSError):
    """The callback's host is, or resolves only to, an address callbacks may not reach."""


def refusal(address: str) -> str | None:
    """Why callbacks may not go to this IP address (None: a public address, or not an IP at all)."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for reason, flagged in (
        ("a loopback address", ip.is_loopback),
        ("a link-local address (cloud metadata services live here)", ip.is_link_local),
        ("a private address", ip.is_private),
        ("a multicast address", ip.is_multicast),
        ("an unspecified address", ip.is_unspecified),
        ("a reserved address", ip.is_reserved),
    ):
        if flagged:
            return reason
    if not ip.is_global:
        return "a non-public address"
    return None


class PublicAddressResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, keeping public addresses only."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [result for result in found if refusal(result["host"]) is None]
        if not public:
            reasons = sorted({refusal(result["host"]) or "" for result in found})
            raise CallbackTargetRefused(
                f"callback host {host!r} resolves only to {', '.join(reasons)}; callbacks go to public addresses "
                f"(RELAYBOT_API__ALLOW_PRIVATE_CALLBACKS=true allows others, for local development)"
            )
        return public

    async def close(self) -> None:
        await self._inner.close()
