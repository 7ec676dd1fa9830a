"""The server secret that signs session tokens."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path


def _load_or_create(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48).encode()
    # O_EXCL: two processes starting together agree on whichever secret was written first.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


async def load_or_create_secret(path: Path) -> bytes:
    """Read the secret from `path`, generating it on first start (tokens survive restarts)."""
    return await asyncio.to_thread(_load_or_create, path)
