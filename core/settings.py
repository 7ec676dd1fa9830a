"""Process settings: the only module that reads the environment.

Precedence: environment variables (prefix `RELAYBOT_`, plus the SDKs' own names such as
`REDIS_URL`, `DATABASE_URL`, `OPENAI_API_KEY`) over `config/<env>.toml` over `config/default.toml`
over the defaults below. Everything else in relaybot receives these values through constructors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr
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
    token_ttl_seconds: int = Field(30 * 24 * 3600, ge=60)
    heartbeat_seconds: float = 20.0
    send_timeout_seconds: float = 5.0


class ApiSettings(BaseModel):
    """The generic HTTP API channel: POST /api/messages, replies POSTed to the caller's callback URL."""

    keys: list[SecretStr] = Field(
        default_factory=list, description="API keys accepted as 'Authorization: Bearer KEY'; none: channel off"
    )
    signing_secret: SecretStr | None = Field(None, description="signs callbacks; defaults to the server secret")
    allowed_callback_hosts: list[str] = Field(
        default_factory=lambda: ["*"], description="hosts replies may be POSTed to; '*' allows any"
    )
    callback_timeout_seconds: float = Field(10.0, gt=0)
    max_text_chars: int = Field(4000, ge=1)


class SlackSettings(BaseModel):
    """Slack options (RELAYBOT_SLACK__*); credentials come from SLACK_BOT_TOKEN and friends."""

    ignore_bots: bool = Field(True, description="ignore messages posted by other bots and apps")


class TelegramSettings(BaseModel):
    """Telegram options (RELAYBOT_TELEGRAM__*); the token comes from TELEGRAM_BOT_TOKEN."""

    groups_require_mention: bool = Field(
        True, description="in groups, answer only messages that mention the bot or reply to it"
    )


class TwilioSettings(BaseModel):
    """Twilio SMS and WhatsApp options (RELAYBOT_TWILIO__*); credentials from TWILIO_ACCOUNT_SID/AUTH_TOKEN."""

    public_base_url: str | None = Field(
        None, description="the https://host Twilio calls (signatures are over this URL); e.g. https://bot.example.com"
    )
    trust_forwarded_headers: bool = Field(
        False, description="rebuild the public URL from X-Forwarded-Proto/Host (only behind a proxy you trust)"
    )


def _sdk_env(name: str) -> AliasChoices:
    """An SDK's own environment variable name, also accepted with the RELAYBOT_ prefix."""
    return AliasChoices(name, f"RELAYBOT_{name}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RELAYBOT_",
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
    )

    env: str = "development"
    host: str = "127.0.0.1"
    port: int = 8080
    bots_dir: Path = Path("bots")
    data_dir: Path = Path("data")
    default_bot: str = "support"
    secret_key: SecretStr | None = Field(
        None, description="signs web session tokens; generated into DATA_DIR/secret_key when unset"
    )
    redis_url: str | None = Field(None, validation_alias=AliasChoices("REDIS_URL", "RELAYBOT_REDIS_URL"))
    database_url: str | None = Field(None, validation_alias=AliasChoices("DATABASE_URL", "RELAYBOT_DATABASE_URL"))
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("OPENAI_API_KEY", "RELAYBOT_OPENAI_API_KEY")
    )
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "RELAYBOT_ANTHROPIC_API_KEY")
    )
    openai_base_url: str | None = Field(
        None, validation_alias=AliasChoices("OPENAI_BASE_URL", "RELAYBOT_OPENAI_BASE_URL")
    )
    anthropic_base_url: str | None = Field(
        None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "RELAYBOT_ANTHROPIC_BASE_URL")
    )
    session_ttl_seconds: int = Field(3600, ge=1)
    bus: Literal["memory", "redis"] = Field(
        "memory", description="memory: one process (relaybot run); redis: adapters and workers as separate processes"
    )
    worker_concurrency: int = Field(16, ge=1)
    visibility_timeout_seconds: float = Field(
        30.0, gt=0, description="an entry a crashed worker held is taken over after this long"
    )
    max_attempts: int = Field(5, ge=1, description="deliveries of one entry before it is dead-lettered")
    lock_ttl_seconds: float = Field(
        30.0, gt=0, description="a conversation lock of a crashed worker expires after this"
    )
    shutdown_grace_seconds: float = Field(20.0, ge=0, description="on SIGTERM, time to finish turns in flight")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    web: WebSettings = Field(default_factory=WebSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    polling: bool = Field(
        False,
        description="receive by long polling (Telegram) or Socket Mode (Slack) instead of webhooks: "
        "for development without a public URL",
    )
    slack: SlackSettings = Field(default_factory=SlackSettings)
    slack_bot_token: SecretStr | None = Field(None, validation_alias=_sdk_env("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(None, validation_alias=_sdk_env("SLACK_SIGNING_SECRET"))
    slack_app_token: SecretStr | None = Field(
        None, validation_alias=_sdk_env("SLACK_APP_TOKEN"), description="xapp- token, for Socket Mode"
    )
    slack_api_url: str = Field("https://slack.com/api/", validation_alias=_sdk_env("SLACK_API_URL"))
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    telegram_bot_token: SecretStr | None = Field(None, validation_alias=_sdk_env("TELEGRAM_BOT_TOKEN"))
    telegram_webhook_secret: SecretStr | None = Field(
        None, validation_alias=_sdk_env("TELEGRAM_WEBHOOK_SECRET"), description="X-Telegram-Bot-Api-Secret-Token"
    )
    telegram_api_url: str = Field("https://api.telegram.org", validation_alias=_sdk_env("TELEGRAM_API_URL"))
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    twilio_account_sid: str | None = Field(None, validation_alias=_sdk_env("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=_sdk_env("TWILIO_AUTH_TOKEN"))
    twilio_api_url: str | None = Field(
        None, validation_alias=_sdk_env("TWILIO_API_URL"), description="default: Twilio's own API hosts"
    )

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'relaybot.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_dir = Path(os.environ.get("RELAYBOT_CONFIG_DIR", "config"))
        env_name = os.environ.get("RELAYBOT_ENV", "development")
        files = [p for p in (config_dir / "default.toml", config_dir / f"{env_name}.toml") if p.is_file()]
        # Later files win, so the per-environment file overrides the defaults.
        toml = TomlConfigSettingsSource(settings_cls, toml_file=files)
        return (init_settings, env_settings, toml)


LogFormat = Literal["json", "console"]


def environment() -> Mapping[str, str]:
    """The process environment, for settings a bot names itself (a model step's `api_key_env`)."""
    return os.environ
