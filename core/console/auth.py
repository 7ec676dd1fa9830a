"""Operators' sign-in over HTTP: POST /console/login and /console/logout, and the check every
console route makes before it does anything.

A sign-in sets a session cookie (HttpOnly, SameSite=Strict, Secure over https and always in
production) scoped to /console. Every state-changing request must also carry the session's CSRF
token in the `X-CSRF-Token` header (the page reads it from GET /console/api/me): a page on another
site can make the browser send the cookie, but cannot read the token. Failed sign-ins count per
account and per client address; at the limit the account (or address) is locked out for a while,
even with the right password.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from core.clientaddr import ClientAddress
from core.console.accounts import Operator, OperatorAccounts, normalize_email
from core.console.sessions import ConsoleSession, ConsoleSessions, LockState, LoginLockout
from core.errors import StoreError
from core.settings import Settings

__all__ = ["COOKIE", "CSRF_HEADER", "ConsoleAuth", "SignedIn", "json_error"]

COOKIE = "relaybot_console"
CSRF_HEADER = "X-CSRF-Token"
COOKIE_PATH = "/console"


def json_error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> web.HTTPException:
    """An HTTP error with a JSON body {"error": code, "message": message} the page shows as is."""
    error = web.HTTPException(
        text=web.json_response({"error": code, "message": message}).text,
        content_type="application/json",
        headers=headers,
    )
    error.set_status(status)
    return error


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedIn:
    """The operator behind a request, with their console session."""

    token: str
    session: ConsoleSession
    operator: Operator


class ConsoleAuth:
    def __init__(
        self,
        *,
        accounts: OperatorAccounts,
        sessions: ConsoleSessions,
        lockout: LoginLockout,
        settings: Settings,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._accounts = accounts
        self._sessions = sessions
        self._lockout = lockout
        self._settings = settings
        self._client_address = ClientAddress(settings.web.trusted_proxies)
        self._log = logger or structlog.get_logger("relaybot.console")

    # --- routes ---------------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.Response:
        """Email and password as JSON or as a form: 200 with the CSRF token (JSON) or 303 back to
        the console (form), with the session cookie; 401 for a wrong password, 429 when locked out,
        503 while the session store or the database is unreachable."""
        try:
            return await self._login(request)
        except StoreError as exc:
            await self._log.aerror("console_login_unavailable", error=str(exc))
            message = "sign-in is unavailable right now (the log says why); try again shortly"
            raise json_error(503, "unavailable", message) from exc

    async def _login(self, request: web.Request) -> web.Response:
        self._same_origin(request)
        as_form = request.content_type != "application/json"
        email, password = await self._credentials(request, as_form=as_form)
        config = self._settings.console
        account_key, address_key = f"account:{email}", f"ip:{self._client_address(request)}"
        state = await self._lockout.check([account_key, address_key])
        if state.locked:
            raise self._locked_out(state)
        operator = await self._accounts.verify(email, password)
        if operator is None:
            state = await self._lockout.failed(
                {account_key: config.lockout_failures, address_key: config.lockout_failures_per_ip},
                config.lockout_minutes * 60,
            )
            await self._log.awarning("console_login_failed", email=email, address=address_key[3:], locked=state.locked)
            if state.locked:
                raise self._locked_out(state)
            raise json_error(401, "wrong_credentials", "wrong email or password")
        await self._lockout.succeeded(account_key)
        token, session = await self._sessions.create(operator.email, config.session_ttl_seconds)
        await self._log.ainfo("console_login", email=operator.email)
        response = (
            web.Response(status=303, headers={"Location": f"{COOKIE_PATH}/"})
            if as_form
            else web.json_response(self.describe(operator, session))
        )
        response.set_cookie(
            COOKIE,
            token,
            max_age=config.session_ttl_seconds,
            path=COOKIE_PATH,
            httponly=True,
            samesite="Strict",
            secure=self._secure(request),
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        signed = await self.signed_in(request, state_changing=True)
        await self._sessions.end(signed.token)
        await self._log.ainfo("console_logout", email=signed.operator.email)
        response = web.json_response({"status": "signed_out"})
        response.del_cookie(COOKIE, path=COOKIE_PATH)
        return response

    # --- what every console route checks --------------------------------------------------------

    async def signed_in(self, request: web.Request, *, state_changing: bool) -> SignedIn:
        """The operator signed in on this request; 401 without a live session, 403 when a
        state-changing request lacks the session's CSRF token."""
        token = request.cookies.get(COOKIE, "")
        if not token:
            raise json_error(401, "signed_out", "sign in first (POST /console/login)")
        session = await self._sessions.get(token)
        if session is None:
            raise json_error(401, "signed_out", "your sign-in ended: sign in again")
        operator = await self._accounts.get(session.email)
        if operator is None:
            await self._sessions.end(token)
            raise json_error(401, "signed_out", "this operator account no longer exists")
        if state_changing:
            given = request.headers.get(CSRF_HEADER, "").encode("utf-8", "surrogateescape")
            if not given or not hmac.compare_digest(given, session.csrf.encode()):
                raise json_error(
                    403,
                    "csrf",
                    f"missing or wrong {CSRF_HEADER} header: a change must come from the console page "
                    "(reload it; the token comes with GET /console/api/me)",
                )
        return SignedIn(token=token, session=session, operator=operator)

    async def still_signed_in(self, token: str) -> bool:
        return await self._sessions.get(token) is not None

    @staticmethod
    def describe(operator: Operator, session: ConsoleSession) -> dict[str, Any]:
        return {
            "email": operator.email,
            "bots": None if operator.bots is None else list(operator.bots),
            "csrf": session.csrf,
            "expires_at": session.expires_at,
        }

    # --- helpers --------------------------------------------------------------------------------

    def _secure(self, request: web.Request) -> bool:
        # Behind a TLS-terminating proxy the socket is plain HTTP: trust the proxy's word for it,
        # and in production always (a Secure cookie is only ever more restricted).
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return request.secure or forwarded == "https" or self._settings.env == "production"

    @staticmethod
    def _same_origin(request: web.Request) -> None:
        """A sign-in posted by another site's page would sign the browser in to an account the
        attacker chose (login CSRF): a browser names the page's origin, which must be ours."""
        origin = request.headers.get("Origin")
        if origin is None:
            return
        if urlsplit(origin).netloc != request.host:
            raise json_error(403, "cross_site", "sign-ins are taken only from the console's own page")

    @staticmethod
    async def _credentials(request: web.Request, *, as_form: bool) -> tuple[str, str]:
        data: Any
        try:
            data = await request.post() if as_form else await request.json()
        except ValueError as exc:
            raise json_error(400, "invalid_request", f"the body is not valid JSON: {exc}") from exc
        email = data.get("email") if hasattr(data, "get") else None
        password = data.get("password") if hasattr(data, "get") else None
        if not isinstance(email, str) or not isinstance(password, str) or not email.strip() or not password:
            raise json_error(400, "invalid_request", "send 'email' and 'password'")
        return normalize_email(email), password

    @staticmethod
    def _locked_out(state: LockState) -> web.HTTPException:
        minutes = max(1, round(state.retry_after / 60))
        return json_error(
            429,
            "locked_out",
            f"too many failed sign-ins: try again in {minutes} minute{'s' if minutes != 1 else ''}",
            headers={"Retry-After": str(state.retry_after)},
        )
