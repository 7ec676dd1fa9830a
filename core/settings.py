"""Process settings: the only module that reads the environment.

Precedence: environment variables (prefix `RELAYBOT_`, plus the SDKs' own names such as
`REDIS_URL`, `DATABASE_URL`, `OPENAI_API_KEY`) over `config/<env>.toml` over `config/default.toml`
over the defaults below. Everything else in relaybot receives these values through constructors.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class WebSettings(BaseModel):
    """The web widget and WebSocket channel."""

    max_frame_bytes: int = Field(16 * 1024, ge=1024, description="WebSocket frames above this close with 1009")
    max_text_chars: int = Field(4000, ge=1, description="message text above this gets an error frame")
    allowed_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Origins allowed to open the WebSocket; '*' allows any (set your sites in production)",
    )
    token_ttl_seconds: int = Field(
        30 * 24 * 3600, ge=60, description="how long an unused session token stays valid (30 days)"
    )
    heartbeat_seconds: float = Field(
        20.0, description="WebSocket ping interval; a socket that does not answer the ping is closed"
    )
    send_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="a socket whose send stalls this long is dropped, within a quarter more (it resumes with after=)",
    )
    resume_replies: int = Field(
        50, ge=1, description="a resuming widget gets at most this many of the replies it missed (the newest)"
    )
    new_sessions_per_minute_per_ip: int = Field(
        30, ge=1, description="token-less connections (new sessions) one client address may open per minute"
    )
    messages_per_minute_per_ip: int = Field(120, ge=1, description="messages one client address may send per minute")
    messages_per_minute_per_connection: int = Field(30, ge=1, description="messages one socket may send per minute")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks of your proxies: only their X-Forwarded-For names the client",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for proxy in value:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)") from None
        return value


class ApiSettings(BaseModel):
    """The generic HTTP API channel: POST /api/messages, replies POSTed to the caller's callback URL."""

    keys: list[SecretStr] = Field(
        default_factory=list, description="API keys accepted as 'Authorization: Bearer KEY'; none: channel off"
    )
    signing_secret: SecretStr | None = Field(
        None, description="signs callbacks; unset: a key derived from the server secret (`relaybot api signing-key`)"
    )
    allowed_callback_hosts: list[str] = Field(
        default_factory=lambda: ["*"], description="hosts replies may be POSTed to; '*' allows any"
    )
    tenants: dict[str, list[str]] = Field(
        default_factory=dict,
        description="the tenants each API key may act for, by the key's id (`relaybot api key-ids`); none: no tenant",
    )
    allow_private_callbacks: bool = Field(
        False,
        description="allow callbacks to loopback, private and link-local addresses (local development, tests)",
    )
    callback_timeout_seconds: float = Field(10.0, gt=0, description="timeout of one callback attempt")
    max_text_chars: int = Field(4000, ge=1, description="message text above this is refused (400 text_too_long)")


class SlackSettings(BaseModel):
    """Slack options (RELAYBOT_SLACK__*); credentials come from SLACK_BOT_TOKEN and friends."""

    ignore_bots: bool = Field(True, description="ignore messages posted by other bots and apps")
    bot: str | None = Field(None, description="the bot that answers in this Slack app; default: default_bot")
    thread_replies: bool = Field(
        True, description="in channels, answer replies without a mention in threads the bot already answers in"
    )
    dm_threads: bool = Field(False, description="answer direct messages in a thread (default: inline in the DM)")
    max_body_bytes: int = Field(
        256 * 1024, ge=1024, description="event requests larger than this are refused (413) before parsing"
    )
    user_cache_size: int = Field(10_000, ge=1, description="display names kept from users.info")
    user_cache_ttl_seconds: float = Field(3600.0, ge=0, description="how long a cached display name is kept")
    user_lookup_timeout_seconds: float = Field(
        1.0, gt=0, description="a slow users.info must not hold the 3-second ack: the name is left out"
    )
    api_timeout_seconds: float = Field(15.0, gt=0, description="timeout of one Slack Web API call")
    stream_interval_seconds: float = Field(1.0, gt=0, description="at most one chat.update per this, per reply")
    stream_open_after_seconds: float = Field(
        0.5,
        ge=0,
        description="streaming: the first words go up this long after they arrive; a reply done by then is posted once",
    )
    app_name: str = Field("Relaybot", description="the app name `relaybot slack manifest` prints")


class TelegramSettings(BaseModel):
    """Telegram options (RELAYBOT_TELEGRAM__*); the token comes from TELEGRAM_BOT_TOKEN."""

    groups_require_mention: bool = Field(
        True, description="in groups, answer only messages that mention the bot or reply to it"
    )
    bot: str | None = Field(None, description="the bot that answers on this Telegram token; default: default_bot")
    edit_interval_seconds: float = Field(
        1.0, ge=0.0, description="streaming: at most one editMessageText per message this often (flood limits)"
    )
    edit_open_after_seconds: float = Field(
        0.5,
        ge=0,
        description="streaming: the first words go up this long after they arrive; a reply done by then is sent once",
    )
    request_timeout_seconds: float = Field(
        15.0, gt=0, description="Bot API calls; a send that times out is recorded as unknown, not repeated"
    )
    poll_timeout_seconds: int = Field(30, ge=0, le=50, description="long polling: getUpdates waits this long")
    max_update_bytes: int = Field(256 * 1024, ge=1024, description="webhook bodies above this get 413 unread")
    file_timeout_seconds: float = Field(
        2.0, gt=0, description="getFile when an attachment (telegram-file:ID) is resolved to its download, at use"
    )
    typing_max_seconds: float = Field(60.0, ge=0, description="show 'typing…' at most this long while answering")
    drafts_in_private_chats: bool = Field(
        False, description="stream into the private chat's draft preview (sendMessageDraft) instead of editing"
    )


class KnowledgeSettings(BaseModel):
    """Retrieval options (RELAYBOT_KNOWLEDGE__*); the Chroma server comes from CHROMA_URL."""

    enabled: bool = Field(True, description="retrieve from the bots' knowledge sets (when anything was ingested)")
    top_k: int = Field(4, ge=1, le=50, description="passages given to the model per message")
    min_score: float = Field(
        0.32, ge=-1, le=1, description="cosine similarity below which a chunk counts as unrelated (not retrieved)"
    )
    coverage_weight: float = Field(
        1.5,
        ge=0,
        description="how much the share of the question's words found in the passages counts in the answer decision",
    )
    min_evidence: float = Field(
        0.66,
        ge=-1,
        le=3,
        description="answer only when best cosine + coverage_weight x word coverage - unknown_weight x unknown words "
        "- type_weight x missing answer type reaches this (else I don't know)",
    )
    unknown_weight: float = Field(
        0.2,
        ge=0,
        description="how much the share of the question's words that no document contains counts against answering",
    )
    type_weight: float = Field(
        1.5,
        ge=0,
        description="how much it counts against answering that the question asks for a number, a time, a person or a "
        "place and no sentence of the passages about it holds one",
    )
    reject_unknown_names: bool = Field(
        True, description="a question naming something the documents never mention (e.g. another product) finds nothing"
    )
    chunk_chars: int = Field(800, ge=100, description="the size limit of one chunk when ingesting")
    overlap_chars: int = Field(120, ge=0, description="text consecutive chunks of one section share")
    embeddings: Literal["local", "openai"] = Field(
        "local", description="local: MiniLM ONNX, offline; openai: the OpenAI embeddings API (OPENAI_API_KEY)"
    )
    openai_embedding_model: str = Field(
        "text-embedding-3-small", description="the OpenAI embeddings model when embeddings = openai"
    )
    embedding_threads: int | None = Field(None, ge=1, description="onnxruntime threads; default: all cores")
    ingest_on_start: bool = Field(
        True, description="`relaybot run` ingests each bot's knowledge/ folder at start; `relaybot chat` its bot's"
    )


class TwilioSettings(BaseModel):
    """Twilio SMS and WhatsApp options (RELAYBOT_TWILIO__*); credentials from TWILIO_ACCOUNT_SID/AUTH_TOKEN."""

    public_base_url: str | None = Field(
        None, description="the https://host Twilio calls (signatures are over this URL); e.g. https://bot.example.com"
    )
    trust_forwarded_headers: bool = Field(
        False, description="rebuild the public URL from X-Forwarded-Proto/Host (only behind a proxy you trust)"
    )
    numbers: dict[str, str] = Field(
        default_factory=dict,
        description='which bot answers each of your Twilio numbers, e.g. {"+15550001111": "sales"}; '
        "other numbers get the default bot",
    )
    whatsapp_templates: dict[str, str] = Field(
        default_factory=dict,
        description='per bot, the approved WhatsApp template (Content SID "HX...") sent instead of a reply '
        "outside WhatsApp's 24-hour window; without one such a reply is recorded as not sent",
    )
    whatsapp_buttons: bool = Field(
        False,
        description="show a reply's buttons on WhatsApp as quick replies (up to 3) or a list (up to 10), made "
        "through Twilio's Content API (one resource per distinct set of buttons, created on first use); "
        "off: numbered choices in the text, as on SMS",
    )
    status_callbacks: bool = Field(True, description="ask Twilio for delivery status callbacks (needs public_base_url)")
    send_timeout_seconds: float = Field(
        15.0, gt=0, description="a send with no answer by then is recorded 'unknown', never resent (SMS would repeat)"
    )
    max_text_chars: int = Field(4096, ge=1, description="inbound message text above this is refused (400)")


class ConsoleSettings(BaseModel):
    """The operator console (/console): operators' sign-in sessions and the lockout after failed sign-ins."""

    enabled: bool = Field(True, description="`relaybot run` serves the console at /console (operators sign in)")
    session_ttl_seconds: int = Field(
        12 * 3600, ge=60, description="an operator's sign-in lasts this long (then they sign in again)"
    )
    lockout_failures: int = Field(
        5, ge=1, description="failed sign-ins for one account (from anywhere) before it is locked out"
    )
    lockout_failures_per_ip: int = Field(
        20, ge=1, description="failed sign-ins from one client address (any account) before it is locked out"
    )
    lockout_minutes: int = Field(
        15, ge=1, description="failures are counted over this long, and a lockout lasts this long"
    )
    password_rounds: int = Field(
        12, ge=4, le=16, description="bcrypt cost of new operator passwords (2^N rounds; 12 takes about 0.2 s)"
    )


#: environment variables read before the settings, because they choose the files the settings come
#: from: name -> (default, meaning). The settings reference lists them with the settings.
BOOTSTRAP_ENV: dict[str, tuple[str, str]] = {
    "RELAYBOT_CONFIG_DIR": ("config", "the folder of `default.toml` and `<env>.toml`"),
}


def _sdk_env(name: str) -> AliasChoices:
    """An SDK's own environment variable name, also accepted with the RELAYBOT_ prefix."""
    return AliasChoices(name, f"RELAYBOT_{name}")


class Settings(BaseSettings):
    """Every setting of a relaybot process (docs/settings.md is generated from these fields)."""

    model_config = SettingsConfigDict(
        env_prefix="RELAYBOT_",
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
    )

    env: str = Field(
        "development",
        description="selects `config/<env>.toml`; `production` loads `config/production.toml` (JSON logs, public host)",
    )
    host: str = Field("127.0.0.1", description="the address `relaybot run` and `relaybot serve` listen on")
    port: int = Field(8080, description="the port `relaybot run` and `relaybot serve` listen on")
    bots_dir: Path = Field(Path("bots"), description="folder of bot definitions (`<name>/bot.toml`)")
    data_dir: Path = Field(Path("data"), description="SQLite database, generated secret, chroma store, chat history")
    default_bot: str = Field("support", description="the bot on the demo page, in `relaybot chat` and on the API")
    metrics_token: SecretStr | None = Field(
        None,
        description=(
            "when set, GET /metrics needs 'Authorization: Bearer TOKEN' (the port is public); "
            "unset, /metrics is open in development and refused (403) in production"
        ),
    )
    secret_key: SecretStr | None = Field(
        None,
        description="the server secret the keys of web session tokens and API callbacks are derived from; "
        "generated into DATA_DIR/secret_key if unset: set it in production (the same on every web process)",
    )
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "RELAYBOT_REDIS_URL"),
        description="Redis for sessions, rate limits, breakers and (with bus = redis) the bus; unset: in memory",
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "RELAYBOT_DATABASE_URL"),
        description="durable history; postgresql://user:pass@host/db for PostgreSQL; unset: "
        "sqlite:///DATA_DIR/relaybot.db",
    )
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "RELAYBOT_OPENAI_API_KEY"),
        description="key for the openai:* steps of the bots' model chains; "
        "with neither this nor ANTHROPIC_API_KEY every bot answers offline",
    )
    anthropic_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY", "RELAYBOT_ANTHROPIC_API_KEY"),
        description="key for the anthropic:* steps of the bots' model chains",
    )
    openai_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "RELAYBOT_OPENAI_BASE_URL"),
        description="where openai:* steps go (default https://api.openai.com/v1): a proxy, "
        "or any OpenAI-compatible server (Ollama, vLLM, LM Studio)",
    )
    anthropic_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "RELAYBOT_ANTHROPIC_BASE_URL"),
        description="where anthropic:* steps go (default https://api.anthropic.com): a proxy",
    )
    session_ttl_seconds: int = Field(
        3600, ge=1, description="idle time after which a session leaves the session store (its history stays in SQL)"
    )
    handoff_sweep_seconds: float = Field(
        10.0, gt=0, description="how often a worker returns conversations nobody took in time to the bot"
    )
    bus: Literal["memory", "redis"] = Field(
        "memory", description="memory: one process (relaybot run); redis: adapters and workers as separate processes"
    )
    # Turns mostly wait (on the model, on the history's commit), so this is far above the cores: at 16,
    # 50 busy widget sessions queued behind 16 turns waiting on their commit (bench/README.md).
    worker_concurrency: int = Field(
        64, ge=1, description="turns run at once per process (one at a time per conversation); also replies in delivery"
    )
    visibility_timeout_seconds: float = Field(
        30.0, gt=0, description="an entry a crashed worker held is taken over after this long"
    )
    max_attempts: int = Field(5, ge=1, description="deliveries of one entry before it is dead-lettered")
    lock_ttl_seconds: float = Field(
        30.0, gt=0, description="a conversation lock of a crashed worker expires after this"
    )
    shutdown_grace_seconds: float = Field(20.0, ge=0, description="on SIGTERM, time to finish turns in flight")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="json: one JSON object per line; console: one readable line per turn; auto: console on a terminal",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description=(
            "the event loop of relaybot run, serve and worker: uvloop (libuv, 5-8% less CPU per message; "
            "not on Windows, where asyncio is used) or asyncio (the standard library's)"
        ),
    )
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="largest HTTP request body accepted")
    web: WebSettings = Field(default_factory=WebSettings, description=WebSettings.__doc__)
    api: ApiSettings = Field(default_factory=ApiSettings, description=ApiSettings.__doc__)
    polling: bool = Field(
        False,
        description="receive by long polling (Telegram) or Socket Mode (Slack) instead of webhooks: "
        "for development without a public URL",
    )
    slack: SlackSettings = Field(default_factory=SlackSettings, description=SlackSettings.__doc__)
    slack_bot_token: SecretStr | None = Field(
        None, validation_alias=_sdk_env("SLACK_BOT_TOKEN"), description="the app's Bot User OAuth Token (xoxb-)"
    )
    slack_signing_secret: SecretStr | None = Field(
        None,
        validation_alias=_sdk_env("SLACK_SIGNING_SECRET"),
        description="the app's Signing Secret: Slack's event requests are verified with it",
    )
    slack_app_token: SecretStr | None = Field(
        None, validation_alias=_sdk_env("SLACK_APP_TOKEN"), description="xapp- token, for Socket Mode"
    )
    slack_api_url: str = Field(
        "https://slack.com/api/",
        validation_alias=_sdk_env("SLACK_API_URL"),
        description="the Slack Web API: a proxy or a test server",
    )
    telegram: TelegramSettings = Field(default_factory=TelegramSettings, description=TelegramSettings.__doc__)
    telegram_bot_token: SecretStr | None = Field(
        None, validation_alias=_sdk_env("TELEGRAM_BOT_TOKEN"), description="the token @BotFather gave your bot"
    )
    telegram_webhook_secret: SecretStr | None = Field(
        None,
        validation_alias=_sdk_env("TELEGRAM_WEBHOOK_SECRET"),
        description="the X-Telegram-Bot-Api-Secret-Token webhooks must carry; unset: derived from the bot token",
    )
    telegram_api_url: str = Field(
        "https://api.telegram.org",
        validation_alias=_sdk_env("TELEGRAM_API_URL"),
        description="the Bot API: a local Bot API server, a proxy or a test server",
    )
    twilio: TwilioSettings = Field(default_factory=TwilioSettings, description=TwilioSettings.__doc__)
    twilio_account_sid: str | None = Field(
        None, validation_alias=_sdk_env("TWILIO_ACCOUNT_SID"), description="Twilio Console, Account Info"
    )
    twilio_auth_token: SecretStr | None = Field(
        None,
        validation_alias=_sdk_env("TWILIO_AUTH_TOKEN"),
        description="Twilio Console, Account Info: authenticates sends and verifies Twilio's webhook signatures",
    )
    twilio_api_url: str | None = Field(
        None,
        validation_alias=_sdk_env("TWILIO_API_URL"),
        description="the Twilio REST API: a proxy or a test server; unset: Twilio's own hosts",
    )
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings, description=KnowledgeSettings.__doc__)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings, description=ConsoleSettings.__doc__)
    chroma_url: str | None = Field(
        None,
        validation_alias=_sdk_env("CHROMA_URL"),
        description="a Chroma server (production); unset: an embedded store under DATA_DIR/chroma",
    )

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'relaybot.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_dir = Path(os.environ.get("RELAYBOT_CONFIG_DIR", BOOTSTRAP_ENV["RELAYBOT_CONFIG_DIR"][0]))
        env_name = os.environ.get("RELAYBOT_ENV", "development")
        files = [p for p in (config_dir / "default.toml", config_dir / f"{env_name}.toml") if p.is_file()]
        # Later files win, so the per-environment file overrides the defaults.
        toml = TomlConfigSettingsSource(settings_cls, toml_file=files)
        return (init_settings, env_settings, toml)


LogFormat = Literal["json", "console"]


def environment() -> Mapping[str, str]:
    """The process environment, for settings a bot names itself (a model step's `api_key_env`)."""
    return os.environ
