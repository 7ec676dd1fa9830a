"""The server secret, and the keys derived from it: one per purpose.

Nothing signs with the server secret itself. Each use gets its own key, HMAC-SHA256 of a label
under the secret, so a key that must be shared (the API channel's callback signing key, given to
every receiver) says nothing about another (the key that signs widget session tokens).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from core.settings import Settings


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


#: the labels keys are derived for; a new use gets a new label, never an existing one
WEB_SESSION_TOKENS = "web-session-tokens"
API_CALLBACKS = "api-callbacks"


def derive_key(secret: bytes, purpose: str) -> bytes:
    """The key for one purpose, derived from the server secret (HMAC-SHA256 with a label), as 64
    hex digits: printable, so a key that is shared can be pasted like any other secret."""
    return hmac.new(secret, f"relaybot key for {purpose}".encode(), hashlib.sha256).hexdigest().encode()


async def server_secret(settings: Settings) -> bytes:
    """RELAYBOT_SECRET_KEY, or the one generated into DATA_DIR/secret_key on first start."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    return await load_or_create_secret(settings.data_dir / "secret_key")
