"""Every inbound route fuzzed with hypothesis: malformed, oversized, wrongly typed and wrongly signed input.

For each input the route gives its 4xx (or the 200 a platform's contract requires for an authentic
request we ignore: said per route below), never a 5xx; nothing reaches the log at error level or
with a traceback; nothing is queued on the bus or stored in the history; and after the fuzzing the
same running server still answers a valid request as usual. The count of inputs tried per route is
printed (`pytest -q` shows it).

How it runs: each test starts one real app (real port, embedded bus, SQLite history, the real SDKs,
fakes only for the platforms' own APIs) and one HTTP client. Hypothesis drives an inner function in
a worker thread, which hands each input to the app's event loop and waits for the answer: thousands
of inputs through one server, no pytest fixture inside @given (so the function-scoped-fixture health
check has nothing to object to), and derandomized examples with no example database, so CI tries
the same inputs on every run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from multidict import MultiDict
from structlog.testing import capture_logs

from channels.telegram.channel import SECRET_HEADER, WEBHOOK_PATH
from core.runtime import Runtime
from core.settings import Settings
from tests.fakes.callback_server import CallbackServer
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.twilio_api import FakeTwilio
from tests.support.api_requests import KEY, message
from tests.support.harness import make_settings, running_app
from tests.support.raw_http import raw_post
from tests.support.slack_requests import EVENTS, callback, dm, signed, slack_settings
from tests.support.telegram_updates import CHAT, message_update, telegram_settings
from tests.support.telegram_updates import SECRET as TELEGRAM_SECRET
from tests.support.twilio_webhooks import PUBLIC, SDK_WARNINGS, settings_for, sms
from tests.support.web_frames import frames_until_reply

pytestmark = SDK_WARNINGS  # the valid SMS sent at the end is answered through the Twilio SDK

T = TypeVar("T")

#: inputs per route: about 3,500 over the module, well under a minute on two cores
EXAMPLES = 700
BODY_LIMIT = 4096  # each route's body limit in these tests; oversized inputs go up to 3 times past it

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # Inputs are drawn quickly; what takes time is the round trip to the server. Oversized bodies
    # are built from a drawn size, not drawn byte by byte.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- building blocks ---------------------------------------------------------------------------

TEXT = st.text(max_size=30)
SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
JSON = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=10
)
NOT_A_DICT = st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
NOT_A_STRING = (
    st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(JSON, max_size=3)
    | st.dictionaries(TEXT, JSON, max_size=3)
)
#: neither an int nor a bool (which Python counts as an int)
NOT_AN_INT = (
    TEXT
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(JSON, max_size=3)
    | st.dictionaries(TEXT, JSON, max_size=3)
)
NOT_A_LIST = NOT_A_DICT | st.dictionaries(TEXT, JSON, max_size=3)
GARBAGE = st.binary(max_size=200) | TEXT.map(str.encode) | JSON.map(lambda v: json.dumps(v).encode())
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/octet-stream",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
    ]
)
#: what an HTTP client puts in a header value (no control characters, no lone surrogates)
HEADER_TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=60)
#: header bytes as anyone on the network can send them, UTF-8 or not (no controls: the HTTP parser
#: refuses those before any route sees them)
RAW_HEADER = st.lists(st.integers(0x20, 0x7E) | st.integers(0x80, 0xFF), min_size=1, max_size=40).map(bytes)


def oversized(draw: st.DrawFn) -> bytes:
    size = draw(st.integers(BODY_LIMIT + 1, 3 * BODY_LIMIT))
    return b'{"text": "' + b"x" * size + b'"}'


@dataclass(frozen=True)
class Request:
    kind: str  # what is wrong with it: counted, and named in a failure
    path: str
    body: bytes
    expect: frozenset[int]
    headers: dict[str, str] = field(default_factory=dict)
    #: sent byte for byte instead (header values that are not UTF-8)
    raw_headers: list[tuple[bytes, bytes]] | None = None
    chunked: bool = False  # no Content-Length: the size is known only by reading


def expect(*statuses: int) -> frozenset[int]:
    return frozenset(statuses)


# --- the harness -------------------------------------------------------------------------------


class Fuzz:
    """One route's fuzzing: the app's loop, its stores and logs, and the inputs tried."""

    def __init__(
        self,
        route: str,
        runtime: Runtime,
        base: str,
        http: aiohttp.ClientSession,
        logs: list[dict[str, Any]],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        self.route = route
        self.runtime = runtime
        self.base = base
        self.http = http
        self.kinds: Counter[str] = Counter()
        self._logs = logs
        self._caplog = caplog
        self._loop = asyncio.get_running_loop()
        # The history the app was built with, read as it is on disk.
        self._db = sqlite3.connect(runtime.settings.data_dir / "relaybot.db", check_same_thread=False)

    @property
    def tried(self) -> int:
        return sum(self.kinds.values())

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=60)

    async def drive(self, inputs: st.SearchStrategy[Any], check: Callable[[Any], Awaitable[None]]) -> None:
        """Send every input hypothesis draws through `check`, then check that it left nothing behind."""

        @FUZZ
        @given(inputs)
        def one(case: Any) -> None:
            # Each input is judged on what it did itself (so that hypothesis, replaying one to shrink
            # it, sees the same outcome); the totals are checked once more at the end.
            self.kinds[case.kind] += 1
            # Whatever an earlier input left queued (it failed already) is answered before this one
            # starts, so it is not blamed on this one.
            self._call(self._settled())
            logged, rows, turns = (len(self._logs), len(self._caplog.records)), self.history_rows(), self.turns()
            self._call(check(case))
            queued = self._call(self.runtime.bus.pending())
            assert queued == 0, f"{case.kind}: something was queued on the bus"
            # An input taken and answered at once is no longer pending, but its turn was counted.
            assert self.turns() == turns, f"{case.kind}: something was queued and answered"
            assert self.history_rows() == rows, f"{case.kind}: something was stored in the history"
            self.assert_quiet(case.kind, since=logged)

        await asyncio.to_thread(one)
        assert self.history_rows() == 0, "the fuzzing stored something in the history"
        assert self.turns() == 0, "the fuzzing queued something"

    async def _settled(self) -> None:
        for _ in range(200):
            if await self.runtime.bus.pending() == 0:
                return
            await asyncio.sleep(0.05)

    def turns(self) -> float:
        """Turns the worker has run (the metric of GET /metrics, every bot, channel and outcome)."""
        return sum(
            sample.value
            for metric in self.runtime.metrics.registry.collect()
            for sample in metric.samples
            if sample.name == "relaybot_turns_total"
        )

    def history_rows(self) -> int:
        (rows,) = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()
        return int(rows)

    def assert_quiet(self, what: str, since: tuple[int, int] = (0, 0)) -> None:
        events = self._logs[since[0] :]
        loud = [e for e in events if e.get("log_level") in ("error", "critical", "exception")]
        loud += [e for e in events if "exc_info" in e or "exception" in e]
        assert not loud, f"{what}: logged {loud[:3]}"
        records = [r for r in self._caplog.records[since[1] :] if r.levelno >= logging.ERROR or r.exc_info]
        assert not records, f"{what}: logged {[r.getMessage() for r in records[:3]]}"

    async def post(self, case: Request) -> int:
        if case.raw_headers is not None:
            return await raw_post(self.base, case.path, case.raw_headers, case.body)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(case.body), 1024):
                yield case.body[start : start + 1024]

        async with self.http.post(
            self.base + case.path,
            data=chunks() if case.chunked else case.body,
            headers=case.headers,
            # A request without a Content-Type header, unless the input names one.
            skip_auto_headers=() if "Content-Type" in case.headers else ("Content-Type",),
        ) as response:
            await response.read()
            return response.status

    async def expect_status(self, case: Request) -> None:
        status = await self.post(case)
        assert status in case.expect, f"{case.kind}: answered {status}, expected {sorted(case.expect)}"

    def close(self) -> None:
        self._db.close()


@asynccontextmanager
async def fuzzing(
    route: str, settings: Settings, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Fuzz]:
    """The app for one route, the fuzz around it, and the count of inputs tried printed at the end."""
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    with capture_logs() as logs:
        async with running_app(settings) as (runtime, base), aiohttp.ClientSession() as http:
            fuzz = Fuzz(route, runtime, base, http, logs, caplog)
            try:
                yield fuzz
                fuzz.assert_quiet("the valid request after the fuzzing")
            finally:
                fuzz.close()
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(fuzz.kinds.items()))
    with capsys.disabled():
        print(f"\nfuzz {route}: {fuzz.tried} inputs tried in {time.monotonic() - started:.1f} s ({kinds})")
    assert fuzz.tried >= EXAMPLES


# --- POST /api/messages ------------------------------------------------------------------------
# Every input is refused: 401 without a valid key (checked first), 413 past the body limit, 400 for
# a body that is not a valid message, 404 for an unknown bot, 403 for a tenant the key was not given.

API_FIELDS = ("conversation_id", "user_id", "text", "message_id", "callback_url", "bot", "user_name", "tenant")
API_REQUIRED = ("conversation_id", "user_id", "text", "message_id", "callback_url")
BAD_CALLBACKS = st.sampled_from(
    [
        "ftp://127.0.0.1/hook",
        "javascript:alert(1)",
        "http://",
        "http:///hook",
        "//127.0.0.1/hook",
        "http://127.0.0.1:notaport/hook",
        "http://127.0.0.1:99999/hook",
        "http://127.0.0.1:-1/hook",
        "http://[::1/hook",
        "http://example.com/hook",  # not in RELAYBOT_API__ALLOWED_CALLBACK_HOSTS
        "https://169.254.169.254/latest/meta-data/",
    ]
) | TEXT.filter(lambda t: "127.0.0.1" not in t)


def _authorizes(header: str) -> bool:
    scheme, _, token = header.strip().partition(" ")
    return scheme.lower() == "bearer" and token.strip() == KEY


@st.composite
def api_requests(draw: st.DrawFn, hook: str) -> Request:
    path = "/api/messages"
    good = message(hook)
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    kind = draw(
        st.sampled_from(
            [
                *("unauthorized", "raw_header", "oversized", "garbage", "wrong_type", "missing", "extra"),
                *("limits", "bad_callback", "unknown_bot", "foreign_tenant"),
            ]
        )
    )
    if kind == "unauthorized":
        header = draw(
            st.none()
            | HEADER_TEXT
            | HEADER_TEXT.map(lambda t: f"Bearer {t}")
            | st.sampled_from([f"Basic {KEY}", f"Bearer {KEY}x", f"Bearer{KEY}", KEY, f"Bearer {KEY[:-1]}"])
        )
        assume(header is None or not _authorizes(header))
        body = draw(GARBAGE | st.just(json.dumps(good).encode()))
        if draw(st.booleans()):
            body = oversized(draw)  # the key is checked first: nothing is read
        headers = {"Content-Type": "application/json"} | ({"Authorization": header} if header is not None else {})
        return Request(kind, path, body, expect(401), headers)
    if kind == "raw_header":
        value = draw(RAW_HEADER)
        assume(value.strip() != KEY.encode())
        return Request(kind, path, json.dumps(good).encode(), expect(401), raw_headers=[(b"Authorization", value)])
    if kind == "oversized":
        return Request(kind, path, oversized(draw), expect(413), auth, chunked=draw(st.booleans()))
    if kind == "garbage":
        content_type = draw(CONTENT_TYPES)
        headers = auth | {"Content-Type": content_type} if content_type else {"Authorization": auth["Authorization"]}
        return Request(kind, path, draw(GARBAGE), expect(400), headers)
    body: dict[str, Any] = dict(good)
    status = 400
    if kind == "wrong_type":
        body[draw(st.sampled_from(API_FIELDS))] = draw(NOT_A_STRING)
    elif kind == "missing":
        del body[draw(st.sampled_from(API_REQUIRED))]
    elif kind == "extra":
        name = draw(TEXT.filter(lambda n: n not in API_FIELDS))
        body[name] = draw(JSON)
    elif kind == "limits":
        name, value = draw(
            st.tuples(st.sampled_from(["conversation_id", "user_id", "message_id"]), st.just(""))
            | st.tuples(
                st.sampled_from(["conversation_id", "user_id", "message_id", "user_name", "tenant"]),
                st.integers(201, 400).map(lambda n: "x" * n),
            )
            | st.tuples(st.just("tenant"), st.just(""))
            | st.tuples(st.just("text"), st.text(" \t\r\n", min_size=1, max_size=5))
            | st.tuples(st.just("text"), st.integers(101, 500).map(lambda n: "y" * n))  # past max_text_chars
        )
        body[name] = value
    elif kind == "bad_callback":
        body["callback_url"] = draw(BAD_CALLBACKS)
    elif kind == "unknown_bot":
        body["bot"] = draw(TEXT.filter(lambda b: b not in ("", "support")))
        status = 404
    else:
        body["tenant"] = draw(st.text(min_size=1, max_size=200))  # no key was given any tenant
        status = 403
    return Request(kind, path, json.dumps(body).encode(), expect(status), auth)


async def test_fuzz_api_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    callbacks = CallbackServer(secret=b"api-callback-secret")
    hook = await callbacks.start()
    api = {"keys": [KEY], "signing_secret": "api-callback-secret", "max_text_chars": 100}
    # The callback receiver is on 127.0.0.1: the only host allowed, so every other host is refused.
    api |= {"allowed_callback_hosts": ["127.0.0.1"], "allow_private_callbacks": True}
    settings = make_settings(tmp_path, api=api, max_body_bytes=BODY_LIMIT)
    try:
        async with fuzzing("/api/messages", settings, caplog, capsys) as fuzz:
            await fuzz.drive(api_requests(hook), fuzz.expect_status)
            headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
            async with fuzz.http.post(f"{fuzz.base}/api/messages", json=message(hook), headers=headers) as response:
                assert response.status == 202
            (reply,) = await callbacks.wait_for(1)
            assert "Can I pay yearly?" in reply["text"]
    finally:
        await callbacks.stop()


# --- POST /slack/events ------------------------------------------------------------------------
# Refused: 413 past the body limit (checked first, unread), 401 for a missing, forged or stale
# signature. Signed (authentic) requests: 400 for a body that is not a JSON object or not of the
# Events API's shape, 404 for a request Bolt has no listener for; 200 for an authentic event we
# ignore, since Slack retries anything else (and disables an app whose events keep failing).

SLACK_EVENT_FIELDS = ("type", "channel", "user", "text", "ts", "subtype", "thread_ts", "channel_type", "bot_id")
SLACK_TOP_FIELDS = ("type", "team_id", "enterprise_id", "api_app_id", "event_id")


def _slack_headers(ts: str | None, signature: str | None, content_type: str | None) -> dict[str, str]:
    headers = {"Content-Type": content_type} if content_type else {}
    if ts is not None:
        headers["X-Slack-Request-Timestamp"] = ts
    if signature is not None:
        headers["X-Slack-Signature"] = signature
    return headers


@st.composite
def slack_requests(draw: st.DrawFn) -> Request:
    now = int(time.time())
    event = json.dumps(callback(dm("hello"))).encode()
    kind = draw(
        st.sampled_from(["unsigned", "raw_header", "oversized", "signed_garbage", "signed_non_object", "wrong_type"])
    )
    if kind == "unsigned":
        body = draw(GARBAGE | st.just(event))
        ts = draw(
            st.none()
            | HEADER_TEXT
            | st.integers().map(str)
            | st.integers(301, 10**9).map(lambda ago: str(now - ago))
            | st.integers(301, 10**9).map(lambda ahead: str(now + ahead))
            | st.integers(4300, 6000).map(lambda n: "9" * n)
            | st.just(str(now))
        )
        how = draw(st.sampled_from(["missing", "text", "hex", "wrong_secret", "other_body", "other_ts", "stale"]))
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:  # Slack signs text: only made-up signatures for bytes
            how = "hex" if how not in ("missing", "text") else how
            text = ""
        signature: str | None = None
        if how == "text":
            signature = draw(HEADER_TEXT)
        elif how == "hex":
            signature = "v0=" + draw(st.binary(min_size=32, max_size=32)).hex()
        elif how == "wrong_secret":
            signature = signed(body, secret="not-the-signing-secret", timestamp=now)["X-Slack-Signature"]
            ts = str(now)
        elif how == "other_body":
            signature = signed(text.encode() + b" ", timestamp=now)["X-Slack-Signature"]
            ts = str(now)
        elif how == "other_ts":
            signature = signed(body, timestamp=now - 1)["X-Slack-Signature"]
            ts = str(now)
        elif how == "stale":  # rightly signed, outside the 5-minute window
            ts = str(now - draw(st.integers(301, 10**6)))
            signature = signed(body, timestamp=int(ts))["X-Slack-Signature"]
        return Request(kind, EVENTS, body, expect(401), _slack_headers(ts, signature, draw(CONTENT_TYPES)))
    if kind == "raw_header":
        ts = draw(st.sampled_from([str(now).encode(), b""]) | RAW_HEADER)
        signature = draw(RAW_HEADER)
        raw = [(b"X-Slack-Request-Timestamp", ts), (b"X-Slack-Signature", signature)]
        return Request(kind, EVENTS, event, expect(401), raw_headers=[*raw, (b"Content-Type", b"application/json")])
    if kind == "oversized":
        body = oversized(draw)
        headers = signed(body) if draw(st.booleans()) else {"Content-Type": "application/json"}
        return Request(kind, EVENTS, body, expect(413), headers, chunked=draw(st.booleans()))
    if kind == "signed_non_object":
        body = json.dumps(draw(NOT_A_DICT | st.lists(JSON, max_size=4))).encode()
        return Request(kind, EVENTS, body, expect(400), signed(body))
    if kind == "signed_garbage":
        body = draw(
            TEXT
            | TEXT.map(lambda t: "payload=" + t)
            | JSON.map(lambda v: "payload=" + json.dumps(v))
            | st.dictionaries(TEXT, TEXT, max_size=4).map(urlencode)
        ).encode()
        content_type = draw(CONTENT_TYPES)
        headers = signed(body) | ({"Content-Type": content_type} if content_type else {})
        if not content_type:
            del headers["Content-Type"]
        return Request(kind, EVENTS, body, expect(200, 400, 404), headers)
    # Authentic and wrongly typed: acknowledged and ignored (200), or refused as malformed (400).
    data = callback(dm("hello"))
    where = draw(st.sampled_from(["event", "top", "top_event", "authorizations"]))
    if where == "event":
        data["event"][draw(st.sampled_from(SLACK_EVENT_FIELDS))] = draw(NOT_A_STRING)
    elif where == "top":
        data[draw(st.sampled_from(SLACK_TOP_FIELDS))] = draw(NOT_A_STRING)
    elif where == "top_event":
        data["event"] = draw(NOT_A_DICT | st.lists(JSON, max_size=3))
    else:
        data["authorizations"] = draw(NOT_A_LIST | st.lists(NOT_A_DICT, min_size=1, max_size=3))
    body = json.dumps(data).encode()
    return Request(kind, EVENTS, body, expect(200, 400), signed(body))


async def test_fuzz_slack_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeSlack() as slack:
        options = {"stream_interval_seconds": 0.2, "stream_open_after_seconds": 0.0, "max_body_bytes": BODY_LIMIT}
        settings = slack_settings(tmp_path, slack, slack=options)
        async with fuzzing(EVENTS, settings, caplog, capsys) as fuzz:
            await fuzz.drive(slack_requests(), fuzz.expect_status)
            body = json.dumps(callback(dm("still there?"), "EvAfterFuzz")).encode()
            async with fuzz.http.post(fuzz.base + EVENTS, data=body, headers=signed(body)) as response:
                assert response.status == 200
            await slack.wait_for(lambda s: len(s.messages) == 1)
            assert "still there?" in slack.messages[0].text


# --- POST /telegram/webhook --------------------------------------------------------------------
# Refused: 401 without the right secret token (checked first), 413 past the body limit. With the
# secret, every body gets 200: Telegram re-sends an update it gets anything else for, for a day,
# so an update we cannot read is acknowledged and dropped.

# python-telegram-bot reads some fields leniently where that changes nothing relaybot publishes (a
# float date is a date, empty entities are none): those are made wrong in ways it cannot read.
NOT_A_NUMBER = TEXT | st.lists(JSON, max_size=3) | st.dictionaries(TEXT, JSON, max_size=3)
NOT_ENTITIES = (
    st.text(min_size=1)
    | st.integers().filter(bool)
    | st.dictionaries(TEXT, JSON, min_size=1, max_size=3)
    | st.lists(NOT_A_DICT, min_size=1, max_size=3)
)
TELEGRAM_PATHS: list[tuple[tuple[str, ...], st.SearchStrategy[Any]]] = [
    (("update_id",), NOT_AN_INT),
    (("message",), NOT_A_DICT | st.lists(JSON, max_size=3)),
    (("message", "message_id"), NOT_AN_INT),
    (("message", "date"), NOT_A_NUMBER),
    (("message", "chat"), NOT_A_DICT | st.lists(JSON, max_size=3)),
    (("message", "chat", "id"), NOT_AN_INT),
    (("message", "chat", "type"), NOT_A_STRING),
    (("message", "from"), NOT_A_DICT | st.lists(JSON, max_size=3)),
    (("message", "from", "id"), NOT_AN_INT),
    (("message", "text"), NOT_A_STRING),
    (("message", "entities"), NOT_ENTITIES),
    (("message", "message_thread_id"), NOT_AN_INT),
]


@st.composite
def telegram_requests(draw: st.DrawFn) -> Request:
    secret = {SECRET_HEADER: TELEGRAM_SECRET, "Content-Type": "application/json"}
    kind = draw(st.sampled_from(["wrong_secret", "raw_header", "oversized", "garbage", "wrong_type"]))
    if kind == "wrong_secret":
        given = draw(
            st.none()
            | HEADER_TEXT
            | st.sampled_from([TELEGRAM_SECRET[:-1], TELEGRAM_SECRET + "x", TELEGRAM_SECRET.upper(), ""])
        )
        assume(given is None or given.strip() != TELEGRAM_SECRET)
        body = draw(GARBAGE | st.just(json.dumps(message_update("hello", message_id=1)).encode()))
        if draw(st.booleans()):
            body = oversized(draw)
        headers = {"Content-Type": "application/json"} | ({SECRET_HEADER: given} if given is not None else {})
        return Request(kind, WEBHOOK_PATH, body, expect(401), headers)
    if kind == "raw_header":
        value = draw(RAW_HEADER)
        assume(value.strip() != TELEGRAM_SECRET.encode())
        body = json.dumps(message_update("hello", message_id=1)).encode()
        return Request(kind, WEBHOOK_PATH, body, expect(401), raw_headers=[(SECRET_HEADER.encode(), value)])
    if kind == "oversized":
        return Request(kind, WEBHOOK_PATH, oversized(draw), expect(413), secret, chunked=draw(st.booleans()))
    if kind == "garbage":
        content_type = draw(CONTENT_TYPES)
        headers = {SECRET_HEADER: TELEGRAM_SECRET} | ({"Content-Type": content_type} if content_type else {})
        return Request(kind, WEBHOOK_PATH, draw(GARBAGE), expect(200), headers)
    update = message_update("hello", message_id=draw(st.integers(1, 10**6)))
    path, values = draw(st.sampled_from(TELEGRAM_PATHS))
    target = update
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = draw(values)
    return Request(kind, WEBHOOK_PATH, json.dumps(update).encode(), expect(200), secret)


async def test_fuzz_telegram_webhook(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")  # as in test_telegram_channel: PTB 22 warns otherwise
    async with FakeTelegram() as telegram:
        settings = telegram_settings(tmp_path, telegram, telegram={"max_update_bytes": BODY_LIMIT})
        async with fuzzing(WEBHOOK_PATH, settings, caplog, capsys) as fuzz:
            await fuzz.drive(telegram_requests(), fuzz.expect_status)
            update = json.dumps(message_update("still there?", message_id=10**7)).encode()
            headers = {SECRET_HEADER: TELEGRAM_SECRET, "Content-Type": "application/json"}
            async with fuzz.http.post(fuzz.base + WEBHOOK_PATH, data=update, headers=headers) as response:
                assert response.status == 200
            await telegram.wait_for(lambda: any("still there?" in s for s in telegram.shown(CHAT)))


# --- POST /twilio/sms, /twilio/whatsapp, /twilio/status ----------------------------------------
# Refused: 403 without a signature (checked first) or with one that does not match, 413 past the
# body limit, 400 for a body that is not a form, or a signed form that is not a message (or status)
# Twilio sends. Twilio shows 4xx answers in its debugger and does not retry them.

TWILIO_ROUTES = ("/twilio/sms", "/twilio/whatsapp", "/twilio/status?reply=r1&bot=support")
TWILIO_REQUIRED = ("MessageSid", "From", "To", "Body")
TWILIO_MAX_TEXT = 1000  # a Body past it is refused (400) while the form stays under the body limit


def _not_zero(text: str) -> bool:
    """Not a count of no media: int() reads " +0", "0_0" and Arabic-Indic zero as 0 too, and an
    empty NumMedia counts as none."""
    try:
        return text != "" and int(text) != 0
    except ValueError:
        return True


@st.composite
def twilio_requests(draw: st.DrawFn, twilio: FakeTwilio) -> Request:
    route = draw(st.sampled_from(TWILIO_ROUTES))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    kind = draw(st.sampled_from(["unsigned", "forged", "raw_header", "oversized", "malformed_message", "malformed"]))
    if kind == "unsigned":
        body = draw(GARBAGE | st.just(urlencode(sms()).encode()))
        if draw(st.booleans()):
            body = oversized(draw)
        return Request(kind, route, body, expect(403), form)
    if kind == "forged":
        params = sms()
        how = draw(st.sampled_from(["text", "wrong_token", "other_url", "tampered", "garbage_body"]))
        body = urlencode(params).encode()
        statuses = expect(403)
        if how == "text":
            signature = draw(HEADER_TEXT.filter(lambda s: s.strip() != ""))
        elif how == "wrong_token":
            signature = twilio.signature(PUBLIC + route, params, token="not-the-auth-token")
        elif how == "other_url":
            other = draw(st.sampled_from(TWILIO_ROUTES).filter(lambda r: r != route))
            signature = twilio.signature(PUBLIC + other, params)
        elif how == "tampered":
            signature = twilio.signature(PUBLIC + route, params)
            body = urlencode(params | {"Body": draw(TEXT.filter(lambda b: b != params["Body"]))}).encode()
        else:  # the form is read before the signature is checked: a body that is no form is a 400
            signature = twilio.signature(PUBLIC + route, params)
            body = draw(GARBAGE)
            statuses = expect(400, 403)
        return Request(f"forged_{how}", route, body, statuses, form | {"X-Twilio-Signature": signature})
    if kind == "raw_header":
        body = urlencode(sms()).encode()
        raw = [(b"X-Twilio-Signature", draw(RAW_HEADER)), (b"Content-Type", form["Content-Type"].encode())]
        return Request(kind, route, body, expect(403), raw_headers=raw)
    if kind == "oversized":
        headers = form | {"X-Twilio-Signature": draw(HEADER_TEXT.filter(lambda s: s.strip() != ""))}
        return Request(kind, route, oversized(draw), expect(413), headers, chunked=draw(st.booleans()))
    # Signed as Twilio signs, and not something Twilio sends.
    pairs: MultiDict[str]
    if route.startswith("/twilio/status"):
        status = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered", "AccountSid": "AC1"}
        how = draw(st.sampled_from(["missing", "empty", "twice", "no_reply"]))
        field_name = draw(st.sampled_from(["MessageSid", "MessageStatus"]))
        pairs = MultiDict(status)
        if how == "missing":
            del pairs[field_name]
        elif how == "empty":
            pairs[field_name] = ""
        elif how == "twice":
            pairs.add(field_name, draw(TEXT))
        else:
            route = "/twilio/status?bot=support"
    else:
        how = draw(st.sampled_from(["missing", "empty", "twice", "num_media", "media_url", "too_long"]))
        pairs = MultiDict(sms())
        if how == "missing":
            del pairs[draw(st.sampled_from(TWILIO_REQUIRED))]
        elif how == "empty":
            name = draw(st.sampled_from(["MessageSid", "From", "To"]))
            pairs[name] = draw((st.text(" \t", max_size=3) | st.just("whatsapp:")) if name == "From" else st.just(""))
        elif how == "twice":
            pairs.add(draw(st.sampled_from([*TWILIO_REQUIRED, "NumMedia"])), draw(TEXT))
        elif how == "num_media":
            pairs["NumMedia"] = draw(st.integers().filter(lambda n: not 0 <= n <= 10).map(str) | TEXT.filter(_not_zero))
        elif how == "media_url":
            count = draw(st.integers(1, 10))
            pairs["NumMedia"] = str(count)
            for index in range(count - 1):
                pairs[f"MediaUrl{index}"] = f"https://api.twilio.com/media/{index}"
            if draw(st.booleans()):
                pairs[f"MediaUrl{count - 1}"] = draw(TEXT.filter(lambda u: not u.startswith(("http://", "https://"))))
        else:
            pairs["Body"] = "z" * draw(st.integers(TWILIO_MAX_TEXT + 1, 3 * TWILIO_MAX_TEXT))
    signature = twilio.signature(PUBLIC + route, pairs)
    body = urlencode(list(pairs.items())).encode()
    return Request(f"malformed_{how}", route, body, expect(400), form | {"X-Twilio-Signature": signature})


async def test_fuzz_twilio_webhooks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    twilio = await FakeTwilio().start()
    try:
        async with FakeOpenAI() as openai:
            openai.always(None, Answer("Yes, yearly plans save 20%."))
            options = {"max_text_chars": TWILIO_MAX_TEXT}
            settings = settings_for(tmp_path, twilio, openai, max_body_bytes=BODY_LIMIT, twilio=options)
            async with fuzzing("/twilio/*", settings, caplog, capsys) as fuzz:
                await fuzz.drive(twilio_requests(twilio), fuzz.expect_status)
                status, text = await twilio.signed_post(f"{PUBLIC}/twilio/sms", sms(), deliver_to=fuzz.base)
                assert status == 200 and text.strip().endswith("<Response/>")
                (sent,) = await twilio.wait_for(1)
                assert sent.body == "Yes, yearly plans save 20%."
    finally:
        await twilio.close()


# --- GET /ws (the widget's WebSocket) ----------------------------------------------------------
# Every bad frame gets an error frame naming what is wrong (with the message's id when it has one)
# and the socket stays open; a frame past max_frame_bytes closes the socket with 1009, and the
# session resumes on a new one. A handshake with any query gets a session, or 404 for an unknown bot.

MAX_FRAME = 16 * 1024
WS_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)


@dataclass(frozen=True)
class Frame:
    kind: str
    text: str | None = None
    data: bytes | None = None
    code: str | None = None  # the error frame's code; None: the socket is closed with 1009
    id: str | None = None  # the message id the error frame names
    query: dict[str, str] | None = None  # a handshake instead of a frame
    origin: str | None = None


def _wanted_code(text: str) -> str:
    """For arbitrary text: what the protocol answers a frame that is not a message (see channels/web/channel.py)."""
    try:
        frame = json.loads(text)
    except ValueError:
        return "bad_json"
    if not isinstance(frame, dict):
        return "bad_json"
    assume(frame.get("type") not in ("message", "ping"))
    return "unknown_type"


CLIENT_ID = st.text(min_size=1, max_size=128)
OUR_TOKEN = "<the fuzzing socket's own token>"  # replaced when sent: a resume with any `after`


@st.composite
def ws_frames(draw: st.DrawFn) -> Frame:
    kind = draw(
        st.sampled_from(
            [
                *("text", "json_not_object", "unknown_type", "bad_id", "bad_type", "empty_text", "too_long"),
                *("binary", "oversized", "handshake"),
            ]
        )
    )
    extra = draw(st.dictionaries(TEXT.filter(lambda k: k not in ("type", "id", "text")), JSON, max_size=3))
    if kind == "text":
        text = draw(TEXT | st.binary(max_size=50).map(lambda b: b.decode("latin-1")))
        return Frame(kind, text=text, code=_wanted_code(text))
    if kind == "json_not_object":
        return Frame(kind, text=json.dumps(draw(NOT_A_DICT | st.lists(JSON, max_size=4))), code="bad_json")
    if kind == "unknown_type":
        frame = extra | {"type": draw(NOT_A_STRING | TEXT.filter(lambda t: t not in ("message", "ping")))}
        if draw(st.booleans()):
            del frame["type"]
        return Frame(kind, text=json.dumps(frame), code="unknown_type")
    if kind == "bad_id":
        bad = draw(NOT_A_STRING | st.just("") | st.integers(129, 300).map(lambda n: "i" * n) | st.none())
        frame = extra | {"type": "message", "id": bad, "text": draw(JSON)}
        return Frame(kind, text=json.dumps(frame), code="bad_id")
    client_id = draw(CLIENT_ID)
    if kind == "bad_type":
        frame = extra | {"type": "message", "id": client_id, "text": draw(NOT_A_STRING | st.none())}
        return Frame(kind, text=json.dumps(frame), code="bad_type", id=client_id)
    if kind == "empty_text":
        frame = extra | {"type": "message", "id": client_id, "text": draw(st.text(" \t\r\n\u00a0\u2003", max_size=8))}
        return Frame(kind, text=json.dumps(frame), code="empty_text", id=client_id)
    if kind == "too_long":
        frame = {"type": "message", "id": client_id, "text": "w" * draw(st.integers(4001, 5000))}
        return Frame(kind, text=json.dumps(frame), code="text_too_long", id=client_id)
    if kind == "binary":
        return Frame(kind, data=draw(st.binary(max_size=300)), code="binary_not_supported")
    if kind == "oversized":
        size = draw(st.integers(MAX_FRAME + 1, 3 * MAX_FRAME))
        if draw(st.booleans()):
            return Frame(kind, data=b"\x00" * size)
        return Frame(kind, text=json.dumps({"type": "message", "id": client_id, "text": "o" * size}))
    query = draw(st.dictionaries(st.sampled_from(["bot", "token", "after"]), TEXT | st.just(OUR_TOKEN), max_size=3))
    origin = draw(st.none() | HEADER_TEXT)
    return Frame(kind, query=query, origin=origin)


class Widget:
    """The fuzzing client's socket: error frames come back on it, and it resumes after a 1009."""

    def __init__(self, fuzz: Fuzz) -> None:
        self.fuzz = fuzz
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.session: dict[str, Any] = {}

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        params = {"token": self.session["token"]} if self.session else {}
        self.ws = await self.fuzz.http.ws_connect(f"{self.fuzz.base}/ws", params=params)
        session = await self.ws.receive_json(timeout=5)
        assert session["type"] == "session", session
        assert not self.session or session["session_id"] == self.session["session_id"], "the resume lost the session"
        self.session = session
        return self.ws

    async def check(self, frame: Frame) -> None:
        if frame.query is not None:
            await self._handshake(frame)
            return
        assert self.ws is not None
        if frame.data is not None:
            await self.ws.send_bytes(frame.data)
        else:
            assert frame.text is not None
            await self.ws.send_str(frame.text)
        if frame.code is None:
            closing = await self.ws.receive(timeout=5)
            assert closing.type in WS_CLOSED and self.ws.close_code == 1009, (closing, self.ws.close_code)
            await self.connect()
            return
        answer = await self.ws.receive_json(timeout=5)
        assert answer["type"] == "error" and answer["code"] == frame.code, f"{frame.kind}: {answer}"
        assert answer.get("id") == frame.id and answer["message"], f"{frame.kind}: {answer}"

    async def _handshake(self, frame: Frame) -> None:
        assert frame.query is not None
        headers = {"Origin": frame.origin} if frame.origin is not None else {}
        query = {k: self.session["token"] if v == OUR_TOKEN else v for k, v in frame.query.items()}
        bot = query.get("bot") or "support"
        try:
            async with self.fuzz.http.ws_connect(f"{self.fuzz.base}/ws", params=query, headers=headers) as ws:
                session = await ws.receive_json(timeout=5)
        except aiohttp.WSServerHandshakeError as refused:
            assert bot != "support" and refused.status == 404, f"handshake {frame.query}: {refused.status}"
            return
        assert bot == "support" and session["type"] == "session", f"handshake {frame.query}: {session}"


async def test_fuzz_websocket_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # The limits at the edge have their own tests; here every input must reach the frame parsing.
    web = {"new_sessions_per_minute_per_ip": 10**6, "messages_per_minute_per_ip": 10**6}
    async with fuzzing("/ws", make_settings(tmp_path, web=web), caplog, capsys) as fuzz:
        widget = Widget(fuzz)
        ws = await widget.connect()
        await fuzz.drive(ws_frames(), widget.check)
        ws = widget.ws or ws
        await ws.send_json({"type": "message", "id": "after-fuzz", "text": "still there?"})
        frames = await frames_until_reply(ws)
        assert frames[0] == {"type": "ack", "id": "after-fuzz"}
        assert frames[-1]["type"] == "reply" and "still there?" in frames[-1]["text"]
        await ws.close()
