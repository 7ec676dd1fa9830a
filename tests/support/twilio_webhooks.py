"""Webhooks as Twilio posts them (SMS and WhatsApp), and settings aimed at the fake Twilio REST API.

Shared by the Twilio channel tests and the route fuzzing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from tests.support.harness import make_settings

# twilio 9.13's async client passes aiohttp.BasicAuth as `auth=`, both deprecated in aiohttp 3.14 (the SDK's
# warnings, not ours: they are silent outside tests).
SDK_WARNINGS = [
    pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning"),
]

PUBLIC = "https://bot.example.com"  # what Twilio calls; the app runs behind a "proxy" on 127.0.0.1
USER = "+15550001111"
OUR_NUMBER = "+15559990000"
WA_USER = f"whatsapp:{USER}"
WA_NUMBER = "whatsapp:+14155238886"
TEMPLATE = "HX" + "a" * 32


def settings_for(tmp_path: Path, fake: FakeTwilio, openai: FakeOpenAI, **overrides: Any) -> Settings:
    options = {"public_base_url": PUBLIC, "whatsapp_templates": {"support": TEMPLATE}}
    options.update(overrides.pop("twilio", {}))
    values: dict[str, Any] = {
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_api_url": fake.url,
        "twilio": options,
        "openai_api_key": "sk-test",
        "openai_base_url": openai.base_url,
        "max_body_bytes": 8192,
    }
    return make_settings(tmp_path, **(values | overrides))


_sids = iter(range(1, 1_000_000))


def sms(body: str = "Can I pay yearly?", *, sid: str | None = None, **fields: str) -> dict[str, str]:
    params = {
        "MessageSid": sid or f"SM{next(_sids):032d}",
        "AccountSid": ACCOUNT_SID,
        "From": USER,
        "To": OUR_NUMBER,
        "Body": body,
        "NumMedia": "0",
        "ApiVersion": "2010-04-01",
    }
    params.update(fields)
    return params
