"""`relaybot doctor`: checks configuration and connectivity, and says what to fix."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from core.bots import BotRegistry
from core.console.accounts import OperatorAccounts
from core.errors import RelaybotError
from core.plugins import channel_names, load_channel_factory
from core.redisio import client_from_url
from core.settings import Settings
from core.stores.sql import SqlHistoryStore

Status = Literal["ok", "warn", "fail"]
MARKS = {"ok": "✓", "warn": "!", "fail": "✗"}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def render(self) -> str:
        line = f"{MARKS[self.status]} {self.name}: {self.detail}"
        return f"{line}\n    fix: {self.fix}" if self.fix else line


async def run_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    production = settings.env == "production"

    def add(name: str, status: Status, detail: str, fix: str = "") -> None:
        checks.append(Check(name, status, detail, fix))

    add("settings", "ok", f"env={settings.env}, bus={settings.bus}, bots_dir={settings.bots_dir}")
    try:
        bots = BotRegistry.from_dir(settings.bots_dir, default=settings.default_bot)
        names = ", ".join(b.name for b in bots)
        add("bots", "ok", f"{names} (default: {bots.default})")
    except RelaybotError as exc:
        add("bots", "fail", str(exc), "create bots/<name>/bot.toml (see bots/support) or set RELAYBOT_BOTS_DIR")

    if not await asyncio.to_thread(_writable, settings):
        add("data dir", "fail", f"{settings.data_dir} is not writable", "create it or set RELAYBOT_DATA_DIR")
    else:
        add("data dir", "ok", str(settings.data_dir))

    if settings.secret_key is None:
        if production or settings.bus == "redis":
            add(
                "secret key",
                "fail",
                "RELAYBOT_SECRET_KEY is not set: each process would sign web sessions with its own secret",
                "set RELAYBOT_SECRET_KEY to the same long random value on every process",
            )
        else:
            add("secret key", "ok", f"generated into {settings.data_dir / 'secret_key'} (fine for one process)")
    else:
        add("secret key", "ok", "set")

    await _check_redis(settings, add)
    await _check("database", add, lambda: _database(settings), "is the database running, and is DATABASE_URL right?")

    if settings.console.enabled:
        await _check_console(settings, add)

    if settings.openai_api_key is None and settings.anthropic_api_key is None:
        add(
            "llm",
            "warn",
            "no OPENAI_API_KEY or ANTHROPIC_API_KEY: every bot answers in offline mode",
            "set OPENAI_API_KEY and/or ANTHROPIC_API_KEY",
        )
    else:
        keys = [n for n, k in (("OpenAI", settings.openai_api_key), ("Anthropic", settings.anthropic_api_key)) if k]
        add("llm", "ok", f"keys for {', '.join(keys)} (not called by the doctor)")

    configured = []
    for name in channel_names():
        try:
            factory = load_channel_factory(name)
        except (RelaybotError, ImportError) as exc:
            add(f"channel {name}", "fail", f"cannot load: {exc}", "reinstall relaybot (pip install -e .)")
            continue
        if factory.is_configured(settings):
            configured.append(name)
    add("channels", "ok", f"relaybot run would start: {', '.join(configured) or 'none'}")
    _check_channel_credentials(settings, add)
    if production and "*" in settings.web.allowed_origins:
        add(
            "web origins",
            "warn",
            "any site may open the widget's WebSocket",
            "set RELAYBOT_WEB__ALLOWED_ORIGINS to your sites",
        )
    if settings.api.keys and "*" in settings.api.allowed_callback_hosts and production:
        add(
            "api callbacks",
            "warn",
            "replies may be POSTed to any host",
            "set RELAYBOT_API__ALLOWED_CALLBACK_HOSTS to your callback hosts",
        )
    return checks


def _writable(settings: Settings) -> bool:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.data_dir):
            return True
    except OSError:
        return False


async def _check(name: str, add: Callable[..., None], probe: Callable[[], Awaitable[str]], fix: str) -> None:
    try:
        add(name, "ok", await probe())
    except Exception as exc:
        add(name, "fail", str(exc), fix)


async def _database(settings: Settings) -> str:
    store = SqlHistoryStore.from_url(settings.effective_database_url)
    try:
        await store.create_schema()
        await store.ping()
    finally:
        await store.close()
    return settings.effective_database_url.split("@")[-1]


async def _check_console(settings: Settings, add: Callable[..., None]) -> None:
    """Who can sign in to /console: a console nobody can sign in to is only found out at the first handoff."""
    try:
        accounts = await OperatorAccounts.open(settings.effective_database_url)
    except Exception as exc:
        add("console", "fail", f"cannot read the operator accounts: {exc}", "is DATABASE_URL right?")
        return
    try:
        operators = await accounts.list()
    except Exception as exc:
        add("console", "fail", f"cannot read the operator accounts: {exc}", "is DATABASE_URL right?")
        return
    finally:
        await accounts.close()
    if not operators:
        add(
            "console",
            "warn",
            "no operator accounts: nobody can sign in to /console to take over a conversation",
            "relaybot operator add EMAIL",
        )
        return
    more = f" and {len(operators) - 3} more" if len(operators) > 3 else ""
    shown = ", ".join(o.email for o in operators[:3]) + more
    add("console", "ok", f"{len(operators)} operator{'s' if len(operators) != 1 else ''}: {shown}")


async def _check_redis(settings: Settings, add: Callable[..., None]) -> None:
    if not settings.redis_url:
        if settings.bus == "redis":
            add("redis", "fail", "RELAYBOT_BUS=redis but REDIS_URL is not set", "set REDIS_URL")
        else:
            add("redis", "ok", "not configured: sessions, rate limits and the bus stay in this process")
        return
    client = client_from_url(settings.redis_url, max_connections=2)
    try:
        info = await client.info("server")
        add("redis", "ok", f"Redis {info.get('redis_version', '?')} answers")
        if settings.bus == "redis":
            try:
                appendonly = (await client.config_get("appendonly")).get("appendonly")
            except Exception:
                appendonly = None
            if appendonly == "no":
                add(
                    "redis persistence",
                    "warn",
                    "appendonly is off: queued messages are lost if Redis restarts",
                    "run Redis with appendonly yes",
                )
            elif appendonly is None:
                add("redis persistence", "warn", "cannot read appendonly (CONFIG disabled?)", "make sure AOF is on")
            else:
                add("redis persistence", "ok", "appendonly yes")
    except Exception as exc:
        add("redis", "fail", f"{exc}", "is redis-server running, and is REDIS_URL right?")
    finally:
        await client.aclose()


def _check_channel_credentials(settings: Settings, add: Callable[[str, Status, str, str], None]) -> None:
    """Half-configured channels: the adapter would not start, or would refuse every request."""
    if settings.slack_bot_token and not settings.slack_signing_secret and not settings.polling:
        add(
            "slack",
            "fail",
            "SLACK_BOT_TOKEN is set but SLACK_SIGNING_SECRET is not: every event would be refused",
            "set SLACK_SIGNING_SECRET (Slack app > Basic Information), or use Socket Mode with SLACK_APP_TOKEN",
        )
    if settings.polling and settings.slack_bot_token and not settings.slack_app_token:
        add(
            "slack",
            "fail",
            "polling (Socket Mode) needs SLACK_APP_TOKEN",
            "create an app-level token (xapp-) with connections:write and set SLACK_APP_TOKEN",
        )
    if bool(settings.twilio_account_sid) != bool(settings.twilio_auth_token):
        add(
            "twilio",
            "fail",
            "only one of TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN is set",
            "set both, from the Twilio console's account info",
        )
    elif settings.twilio_account_sid and not (
        settings.twilio.public_base_url or settings.twilio.trust_forwarded_headers
    ):
        add(
            "twilio",
            "warn",
            "no public base URL: signatures are checked against the URL this process sees, "
            "which fails behind a proxy or tunnel, and no delivery statuses are asked for",
            "set RELAYBOT_TWILIO__PUBLIC_BASE_URL to the https:// address Twilio calls",
        )
