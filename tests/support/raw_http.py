"""One HTTP/1.1 request written byte for byte: header values no HTTP client library will send
(bytes that are not UTF-8), as anyone on the network can."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


async def raw_request(method: str, base: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> int:
    """`method` `base + path` with exactly these header lines and `body`; returns the response's status."""
    url = urlsplit(base)
    assert url.hostname is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        head = [f"{method} {path} HTTP/1.1".encode(), f"Host: {url.hostname}:{url.port}".encode(), b"Connection: close"]
        head += [name + b": " + value for name, value in headers]
        head.append(b"Content-Length: " + str(len(body)).encode())
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()  # the rest, until the server closes
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


async def raw_post(base: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> int:
    return await raw_request("POST", base, path, headers, body)


async def raw_get(base: str, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    return await raw_request("GET", base, path, headers)
