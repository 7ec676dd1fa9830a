"""A fake Telegram Bot API on 127.0.0.1, for the real python-telegram-bot.

    POST /bot{token}/{method}      form-encoded (what PTB sends) or JSON bodies
    → 200 {"ok": true, "result": ...}
    → 4xx {"ok": false, "error_code": N, "description": "...", "parameters": {"retry_after": N}}
    GET /file/bot{token}/{path}    a file's bytes, at the path getFile gave (404 for any other)

It keeps the chats' messages as a client would see them, checks HTML the way Telegram does (an
unknown or unbalanced tag, or a bare `&`, is "can't parse entities"; more than 4,096 characters
of text is "message is too long"), serves `getUpdates` from a queue for long polling, and can be
told to fail: `fail(method, Failure(429, retry_after=1))` for the next call, `block(chat_id)` for
403 "bot was blocked by the user" on every send to a chat, `hang(method)` to never answer.
Files users sent are added with `add_file(file_id, content)`: getFile knows only those.

    async with FakeTelegram(token="123:ABC") as fake:
        app = Application.builder().token(fake.token).base_url(fake.base_url).updater(None).build()
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.local_server import LocalServer

BOT_ID = 7000001
BOT_USERNAME = "relay_test_bot"
MAX_TEXT = 4096
_ALLOWED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "code", "pre",
    "blockquote", "tg-emoji",
}  # fmt: skip
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^<>]*)?)>")
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")


@dataclass(frozen=True)
class Failure:
    """An error answer in the Bot API's envelope; 429 carries `parameters.retry_after`."""

    status: int
    description: str = ""
    retry_after: int | None = None


@dataclass
class Sent:
    """A message as the chat shows it: its current text (after edits) and every version it had."""

    chat_id: int
    message_id: int
    text: str
    parse_mode: str | None
    thread_id: int | None = None
    versions: list[str] = field(default_factory=list)
    #: the inline keyboard under the message: rows of {"text", "callback_data"} (None: none)
    keyboard: list[list[dict[str, Any]]] | None = None


@dataclass(frozen=True)
class Call:
    at: float
    method: str
    params: dict[str, Any]
    status: int


def check_html(text: str) -> str | None:
    """What Telegram says about `text` with parse_mode=HTML: None if it parses, else the error."""
    stack: list[str] = []
    plain: list[str] = []
    pos = 0
    for match in _TAG.finditer(text):
        plain.append(text[pos : match.start()])
        closing, name = match.group(1), match.group(2).lower()
        if name not in _ALLOWED_TAGS:
            return f'can\'t parse entities: unsupported start tag "{name}" at byte offset {match.start()}'
        if closing:
            if not stack or stack[-1] != name:
                return f"can't parse entities: can't find end tag corresponding to start tag \"{name}\""
            stack.pop()
        else:
            stack.append(name)
        pos = match.end()
    plain.append(text[pos:])
    body = "".join(plain)
    if "<" in body:
        return f"can't parse entities: unsupported start tag at byte offset {text.find('<')}"
    for amp in re.finditer("&", body):
        if not _ENTITY.match(body, amp.start()):
            return f"can't parse entities: character '&' is reserved at byte offset {amp.start()}"
    if stack:
        return f"can't parse entities: can't find end tag corresponding to start tag \"{stack[-1]}\""
    return None


def visible_text(text: str, parse_mode: str | None) -> str:
    """The text a user sees: tags removed and entities decoded for HTML."""
    if parse_mode and parse_mode.upper() == "HTML":
        return html.unescape(_TAG.sub("", text))
    return text


class FakeTelegram(LocalServer):
    def __init__(self, *, token: str = "123456:TEST-token") -> None:
        self.token = token
        self.port = 0
        self.calls: list[Call] = []
        #: method names in the order requests arrived (calls are recorded when answered)
        self.arrived: list[str] = []
        self.messages: list[Sent] = []
        #: (chat id, draft id, visible text) per sendMessageDraft
        self.drafts: list[tuple[int, int, str]] = []
        self.webhook: dict[str, Any] | None = None
        #: file id → (file_path, content), for getFile and the download route
        self.files: dict[str, tuple[str, bytes]] = {}
        #: the paths downloaded, in order
        self.downloads: list[str] = []
        #: answerCallbackQuery calls: (callback query id, text shown or None)
        self.callback_answers: list[tuple[str, str | None]] = []
        self._failures: dict[str, deque[Failure | None]] = {}
        self._blocked: set[int] = set()
        self._hanging: set[str] = set()
        self._updates: deque[dict[str, Any]] = deque()
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._pushed = asyncio.Event()

    # --- set-up -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The Bot API root as TELEGRAM_API_URL takes it (the adapter appends /bot)."""
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)

    async def stopping(self) -> None:
        self._closing.set()  # hanging answers return
        self._pushed.set()  # long polls return

    # --- scripting ----------------------------------------------------------------------------

    def fail(self, method: str, *failures: Failure | None) -> None:
        """Answer the next calls of `method` with these failures, in order (None: answer normally)."""
        self._failures.setdefault(method, deque()).extend(failures)

    def block(self, chat_id: int) -> None:
        """The user blocks the bot: every send to the chat gets 403 from now on."""
        self._blocked.add(chat_id)

    def hang(self, method: str) -> None:
        """Calls of `method` are accepted and never answered (until the server closes)."""
        self._hanging.add(method)

    def add_file(self, file_id: str, content: bytes) -> None:
        """A file a user sent: getFile with `file_id` gives its path, which downloads `content`."""
        self.files[file_id] = (f"documents/file_{len(self.files)}.bin", content)

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update for getUpdates (long polling); returns its update_id."""
        update = {"update_id": next(self._update_ids), **update}
        self._updates.append(update)
        self._pushed.set()
        return int(update["update_id"])

    # --- what happened ------------------------------------------------------------------------

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def chat(self, chat_id: int) -> list[Sent]:
        return [m for m in self.messages if m.chat_id == chat_id]

    def shown(self, chat_id: int) -> list[str]:
        """The chat's messages as the user reads them, oldest first."""
        return [visible_text(m.text, m.parse_mode) for m in self.chat(chat_id)]

    async def wait_for(self, predicate: Any, within: float = 15.0) -> None:
        """Wait until `predicate()` is true (re-checked whenever a call arrives)."""
        async with asyncio.timeout(within):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def wait_messages(self, chat_id: int, count: int, within: float = 15.0) -> list[str]:
        await self.wait_for(lambda: len(self.chat(chat_id)) >= count, within)
        return self.shown(chat_id)

    # --- the wire -----------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            data = await request.json()
            return dict(data) if isinstance(data, dict) else {}
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if not isinstance(value, str):
                continue
            # PTB JSON-encodes non-string values inside the form.
            try:
                params[key] = json.loads(value) if value[:1] in "[{" else value
            except ValueError:
                params[key] = value
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.arrived.append(method)
        params = await self._params(request)
        if request.match_info["token"] != self.token:
            return await self._answer(method, params, Failure(401, "Unauthorized"))
        if method in self._hanging:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), 60)
            return web.json_response({"ok": False, "error_code": 504, "description": "hung"}, status=504)
        queued = self._failures.get(method)
        scripted = queued.popleft() if queued else None
        if scripted is not None:
            return await self._answer(method, params, scripted)
        if method == "getUpdates":
            return await self._get_updates(params)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return await self._answer(method, params, Failure(404, "Not Found: method not found"))
        try:
            result = handler(params)
        except _Refused as refused:
            return await self._answer(method, params, refused.failure)
        return await self._answer(method, params, result)

    async def _answer(self, method: str, params: dict[str, Any], outcome: Any) -> web.Response:
        if isinstance(outcome, Failure):
            body: dict[str, Any] = {"ok": False, "error_code": outcome.status, "description": outcome.description}
            if outcome.retry_after is not None:
                body["parameters"] = {"retry_after": outcome.retry_after}
                body["description"] = body["description"] or f"Too Many Requests: retry after {outcome.retry_after}"
            status = outcome.status
        else:
            body, status = {"ok": True, "result": outcome}, 200
        self.calls.append(Call(at=time.monotonic(), method=method, params=params, status=status))
        async with self._changed:
            self._changed.notify_all()
        return web.json_response(body, status=status)

    async def _download(self, request: web.Request) -> web.Response:
        # Telegram answers a wrong token or an unknown path alike: 404 with a JSON error.
        path = request.match_info["path"]
        content = next((c for p, c in self.files.values() if p == path), None)
        if request.match_info["token"] != self.token or content is None:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        self.downloads.append(path)
        return web.Response(body=content, content_type="application/octet-stream")

    async def _get_updates(self, params: dict[str, Any]) -> web.Response:
        offset = int(params.get("offset") or 0)
        while self._updates and self._updates[0]["update_id"] < offset:
            self._updates.popleft()  # confirmed by the client
        wait = min(float(params.get("timeout") or 0), 1.0)
        if not self._updates and wait > 0:
            self._pushed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pushed.wait(), wait)
        return await self._answer("getUpdates", params, list(self._updates)[: int(params.get("limit") or 100)])

    # --- methods ------------------------------------------------------------------------------

    def _m_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Relay",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _chat(self, params: dict[str, Any]) -> int:
        chat_id = int(params["chat_id"])
        if chat_id in self._blocked:
            raise _Refused(Failure(403, "Forbidden: bot was blocked by the user"))
        return chat_id

    def _checked_text(self, params: dict[str, Any]) -> tuple[str, str | None]:
        text, parse_mode = str(params.get("text", "")), params.get("parse_mode")
        if parse_mode and str(parse_mode).upper() == "HTML":
            problem = check_html(text)
            if problem is not None:
                raise _Refused(Failure(400, f"Bad Request: {problem}"))
        elif parse_mode:
            raise _Refused(Failure(400, f"Bad Request: unsupported parse_mode {parse_mode!r} in this fake"))
        if not visible_text(text, parse_mode).strip():
            raise _Refused(Failure(400, "Bad Request: message text is empty"))
        if len(visible_text(text, parse_mode)) > MAX_TEXT:
            raise _Refused(Failure(400, "Bad Request: message is too long"))
        return text, parse_mode

    def _message(self, sent: Sent) -> dict[str, Any]:
        return {
            "message_id": sent.message_id,
            "date": int(time.time()),
            "chat": {"id": sent.chat_id, "type": "private" if sent.chat_id > 0 else "supergroup"},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Relay", "username": BOT_USERNAME},
            "text": visible_text(sent.text, sent.parse_mode),
        }

    def _keyboard(self, params: dict[str, Any]) -> list[list[dict[str, Any]]] | None:
        """The Bot API's checks on an inline keyboard: callback_data is 1-64 bytes, button text not empty."""
        markup = params.get("reply_markup")
        if markup is None:
            return None
        rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
        if not isinstance(rows, list):
            raise _Refused(Failure(400, "Bad Request: can't parse reply keyboard markup JSON object"))
        for row in rows:
            for button in row:
                data = button.get("callback_data")
                if not str(button.get("text", "")).strip():
                    raise _Refused(Failure(400, "Bad Request: text buttons are unallowed in the inline keyboard"))
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise _Refused(Failure(400, "Bad Request: BUTTON_DATA_INVALID"))
        return rows

    def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat(params)
        text, parse_mode = self._checked_text(params)
        thread = params.get("message_thread_id")
        sent = Sent(chat_id, next(self._message_ids), text, parse_mode, int(thread) if thread else None, [text])
        sent.keyboard = self._keyboard(params)
        self.messages.append(sent)
        return self._message(sent)

    def _m_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat(params)
        text, parse_mode = self._checked_text(params)
        message_id = int(params["message_id"])
        for sent in self.messages:
            if sent.chat_id == chat_id and sent.message_id == message_id:
                if visible_text(sent.text, sent.parse_mode) == visible_text(text, parse_mode):
                    raise _Refused(
                        Failure(
                            400,
                            "Bad Request: message is not modified: specified new message content and reply "
                            "markup are exactly the same as a current content and reply markup of the message",
                        )
                    )
                sent.text, sent.parse_mode = text, parse_mode
                sent.versions.append(text)
                sent.keyboard = self._keyboard(params)
                return self._message(sent)
        raise _Refused(Failure(400, "Bad Request: message to edit not found"))

    def _m_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, message_id = self._chat(params), int(params["message_id"])
        for sent in self.messages:
            if sent.chat_id == chat_id and sent.message_id == message_id:
                sent.keyboard = self._keyboard(params)
                return self._message(sent)
        raise _Refused(Failure(400, "Bad Request: message to edit not found"))

    def _m_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        text = params.get("text")
        if text is not None and len(str(text)) > 200:
            raise _Refused(Failure(400, "Bad Request: MESSAGE_TOO_LONG"))
        self.callback_answers.append((str(params["callback_query_id"]), None if text is None else str(text)))
        return True

    def _m_sendMessageDraft(self, params: dict[str, Any]) -> bool:
        chat_id = self._chat(params)
        if chat_id < 0:
            raise _Refused(Failure(400, "Bad Request: drafts can be sent only to private chats"))
        text, parse_mode = self._checked_text(params)
        self.drafts.append((chat_id, int(params["draft_id"]), visible_text(text, parse_mode)))
        return True

    def _m_sendChatAction(self, params: dict[str, Any]) -> bool:
        self._chat(params)
        return True

    def _m_getFile(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = str(params["file_id"])
        if file_id not in self.files:
            raise _Refused(Failure(400, "Bad Request: invalid file_id"))
        path, content = self.files[file_id]
        return {"file_id": file_id, "file_unique_id": f"u-{file_id}", "file_size": len(content), "file_path": path}

    def _m_setWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = params
        return True

    def _m_deleteWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = None
        return True


class _Refused(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.description)
        self.failure = failure
