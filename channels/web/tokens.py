"""Signed web session tokens: a session id alone cannot take over a conversation.

Format: base64url(JSON payload) "." base64url(HMAC-SHA256(secret, payload)). The payload binds
the session to its bot and an expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class WebSession:
    session_id: str
    bot: str
    expires_at: int


class SessionTokens:
    def __init__(self, secret: bytes, *, ttl_seconds: int, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._secret = secret
        self._ttl = ttl_seconds
        self._clock = clock

    def new_session(self, bot: str) -> tuple[WebSession, str]:
        session = WebSession(secrets.token_urlsafe(18), bot, int(self._clock()) + self._ttl)
        return session, self.sign(session)

    def renew(self, session: WebSession) -> tuple[WebSession, str]:
        renewed = WebSession(session.session_id, session.bot, int(self._clock()) + self._ttl)
        return renewed, self.sign(renewed)

    def sign(self, session: WebSession) -> str:
        payload = _b64(json.dumps({"s": session.session_id, "b": session.bot, "e": session.expires_at}).encode())
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: str, *, bot: str) -> WebSession | None:
        """The session the token proves, or None if it is forged, expired, malformed or for another bot."""
        payload, _, mac = token.partition(".")
        # Compared as bytes: compare_digest refuses str with non-ASCII characters (a forged token may have them).
        if not payload or not mac or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = WebSession(str(data["s"]), str(data["b"]), int(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.bot != bot or session.expires_at < self._clock():
            return None
        return session

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())
