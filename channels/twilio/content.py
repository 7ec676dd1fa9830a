"""WhatsApp buttons through Twilio's Content API: quick replies (≤ 3) or a list (≤ 10).

A reply's buttons become a content resource, `twilio/quick-reply` for up to three buttons and
`twilio/list-picker` for more, whose body is the variable `{{1}}`: the resource depends only on the
buttons, so the same offer (the greeting's topics, a yes/no) is created once and its Content SID
reused with each reply's text as the variable. Each button's `id` is our button id, which WhatsApp
hands back on the click (`ButtonPayload` for a quick reply, `ListId` for a list item).

WhatsApp's limits are applied here, and every cut is logged: a quick reply's title is at most 20
characters, a list item's 24 (the whole label then goes in its 72-character description), the
list's button 20, the body 1,024 (longer text goes out as plain messages before the buttons).

Content is created with the SDK's synchronous client in a thread: twilio 9.13's async HTTP client
form-encodes the JSON body the Content API needs (the SDK sends `types=twilio%2Fquick-reply`, which
Twilio refuses). Creating is rare (once per distinct offer), so the thread costs nothing that matters.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.rest.content.v1.content import ContentList

from channels.twilio.outbound import TwilioSendError, convert
from core.actions import Button

__all__ = [
    "MAX_BODY_CHARS",
    "MAX_LIST_ITEMS",
    "MAX_QUICK_REPLIES",
    "ContentCreator",
    "Cut",
    "InteractiveContent",
    "interactive_content",
]

MAX_QUICK_REPLIES = 3  # in-session WhatsApp quick replies (the Content API allows more only for approved templates)
MAX_QUICK_REPLY_TITLE = 20
MAX_LIST_ITEMS = 10
MAX_LIST_ITEM_CHARS = 24
MAX_LIST_DESCRIPTION_CHARS = 72
MAX_LIST_BUTTON_CHARS = 20
MAX_BODY_CHARS = 1024
MAX_ID_CHARS = 200  # our ids are at most 64 (core.actions), so they are never cut
BODY_VARIABLE = "{{1}}"
#: the text of the button that opens a list
LIST_BUTTON = "Choose"

Kind = Literal["quick-reply", "list-picker"]


@dataclass(frozen=True, slots=True)
class Cut:
    """A label WhatsApp would refuse, and what is shown instead."""

    button_id: str
    label: str
    shown: str
    limit: int


@dataclass(frozen=True, slots=True)
class InteractiveContent:
    """A content resource for one set of buttons: its Content API `types`, and the labels cut to fit."""

    kind: Kind
    types: Mapping[str, Any]
    cuts: tuple[Cut, ...]

    @property
    def key(self) -> str:
        """Names the resource by what it holds: the same buttons give the same key (and Content SID)."""
        canonical = json.dumps(self.types, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def request(self) -> dict[str, Any]:
        """The body of `POST /v1/Content`."""
        return {
            "friendly_name": f"relaybot_{self.kind.replace('-', '_')}_{self.key}",
            "language": "en",
            # A sample for the body's variable (the real text is sent with each message).
            "variables": {"1": "Please choose"},
            "types": dict(self.types),
        }


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def interactive_content(buttons: Sequence[Button]) -> InteractiveContent:
    """Quick replies for up to three buttons, a list for four to ten (core.actions allows at most ten)."""
    if not 1 <= len(buttons) <= MAX_LIST_ITEMS:
        raise ValueError(f"WhatsApp shows 1 to {MAX_LIST_ITEMS} buttons, not {len(buttons)}")
    cuts: list[Cut] = []
    if len(buttons) <= MAX_QUICK_REPLIES:
        actions = []
        for button in buttons:
            title = _fit(button.label, MAX_QUICK_REPLY_TITLE)
            if title != button.label:
                cuts.append(Cut(button.id, button.label, title, MAX_QUICK_REPLY_TITLE))
            actions.append({"title": title, "id": button.id})
        return InteractiveContent(
            kind="quick-reply",
            types={"twilio/quick-reply": {"body": BODY_VARIABLE, "actions": actions}},
            cuts=tuple(cuts),
        )
    items = []
    for button in buttons:
        item: dict[str, str] = {"item": _fit(button.label, MAX_LIST_ITEM_CHARS), "id": button.id}
        if item["item"] != button.label:
            cuts.append(Cut(button.id, button.label, item["item"], MAX_LIST_ITEM_CHARS))
            # The whole label, as far as the description holds it: the user still reads what they choose.
            item["description"] = _fit(button.label, MAX_LIST_DESCRIPTION_CHARS)
        items.append(item)
    return InteractiveContent(
        kind="list-picker",
        types={"twilio/list-picker": {"body": BODY_VARIABLE, "button": LIST_BUTTON, "items": items}},
        cuts=tuple(cuts),
    )


class ContentCreator:
    """Creates content resources with the real SDK (see the module docstring for why synchronously)."""

    def __init__(self, *, account_sid: str, auth_token: str, api_url: str | None, timeout: float) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._api_url = api_url
        self._timeout = timeout

    async def create(self, content: InteractiveContent) -> str:
        """The new resource's Content SID ("HX..."); raises TwilioSendError."""
        return await asyncio.to_thread(self._create, content)

    def _create(self, content: InteractiveContent) -> str:
        # No pooled session: one request per resource, and nothing left open in the thread.
        http = TwilioHttpClient(pool_connections=False, timeout=self._timeout)
        client = Client(self._account_sid, self._auth_token, http_client=http)
        if self._api_url:
            client.content.base_url = self._api_url.rstrip("/")
        try:
            created = client.content.v1.contents.create(ContentList.ContentCreateRequest(content.request()))
        except TwilioRestException as exc:
            raise convert(exc) from exc
        except requests.ConnectionError as exc:
            # Creating twice only makes a second identical resource: safe to retry either way.
            raise TwilioSendError(f"cannot reach Twilio's Content API: {exc}", retryable=True) from exc
        except requests.RequestException as exc:
            raise TwilioSendError(f"Twilio's Content API failed: {exc}", retryable=True) from exc
        sid = str(created.sid or "")
        if not sid.startswith("HX"):
            raise TwilioSendError(f"Twilio's Content API answered without a Content SID ({sid!r})", retryable=True)
        return sid
