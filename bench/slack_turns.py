"""The whole Slack path, signed DM event -> reply posted, against a slack-bolt echo app; CPU per message.

Three servers, each in its own process, driven one after the other by the same closed-loop client in
this process, all talking to the fake Slack Web API (tests/fakes/slack_api.py) that also runs here:

- **relaybot**: `python -m core.cli run` with the Slack channel configured (SLACK_BOT_TOKEN,
  SLACK_SIGNING_SECRET, SLACK_API_URL -> the fake), embedded defaults (in-memory bus and sessions,
  SQLite history in a temp dir, the offline provider) and a bare bot (`benchkit.bare_bots`: no
  intents, no knowledge, limits lifted) that answers the workspace's DMs (RELAYBOT_SLACK__BOT);
- **baseline**: a hand-written slack-bolt `AsyncApp` (this script with `--echo-server PORT`) whose
  `message` listener posts the event's text back with `chat.postMessage`, served by Bolt's own
  aiohttp app on POST /slack/events. It runs first and last; the run with the lower CPU per
  message is the baseline;
- **recording baseline**: the same app with `--recording-echo-server PORT DB`, doing the durable part
  of a turn by hand: events deduped by ts, each conversation's answered one at a time in order, the
  message and its reply committed to SQLite before the post (bench/recording_echo.py's group
  committer). It runs second and fourth; relaybot against it is the cost beyond the guarantees.

Each of `--concurrency` users writes in their own DM and sends the next message once the reply to
the last one is complete in Slack, until `--events` distinct signed `message.im` events have been
sent. Latency runs from sending the event to the fake receiving the `chat.postMessage` of its reply
(`post`) and to the reply being complete there (`done`: the same call for the baseline; the
`chat.update` with the whole text when relaybot streams). The server's CPU (user + system, from
/proc) is read before and after the measured run. Prints events/s, p50/p99, server CPU
per message, Slack API calls per message, and the relaybot/baseline ratios (CPU is the main one).
Exits 1 only when something went wrong (a non-200 ack, a missing, duplicated or misaddressed reply,
a server that did not start or died), never because it was slow.

    python bench/slack_turns.py [--events 2000] [--concurrency 32] [--keep] [--log-level WARNING]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from benchkit import (
    Server,
    add_log_level_option,
    bare_bots,
    cpu_seconds,
    percentile,
    start_server,
    stop_server,
    wait_healthy,
)
from recording_echo import GroupCommitter
from slack_sdk.signature import SignatureVerifier

from tests.fakes.slack_api import BOT_USER_ID, TOKEN, FakeSlack, Message, _params, user
from tests.support.servers import free_port

SECRET = "bench-signing-secret"
REPLY_TIMEOUT = 30.0
WARMUP_PER_USER = 3
QUIET_SECONDS = 0.5  # after a run, how long to watch for a late (duplicated) reply
CURSOR = " …"  # what a streamed Slack message ends with until its final edit (channels/streaming.py)
TOKEN_RE = re.compile(r"bq(\d+)z")
SCRIPT = str(Path(__file__).resolve())
# Nothing in the servers' environment may point them elsewhere or turn on another channel.
ENV_DROPPED_PREFIXES = ("RELAYBOT_", "SLACK_", "TELEGRAM_", "TWILIO_")
ENV_DROPPED = ("REDIS_URL", "DATABASE_URL", "CHROMA_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")


# --- the baseline: a slack-bolt AsyncApp echo -----------------------------------------------------


def run_echo_server(port: int, record_to: Path | None = None) -> None:
    """The Bolt echo; with `record_to`, the recording Bolt echo: the durable part of a turn by hand on
    top of it (bench/recording_echo.py has the same for the widget). Each event is deduped by its
    ts, the conversation's events are answered one at a time in arrival order, and the message and
    its reply are committed to a SQLite history (group-committed on a thread) before the reply is
    posted. No rate limits, session window, memory, metrics, logs, model call or delivery records."""
    from slack_bolt.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    token = os.environ.pop("SLACK_BOT_TOKEN")  # given to the client; Bolt would also read it and warn
    signing_secret = os.environ["SLACK_SIGNING_SECRET"]
    api_url = os.environ["SLACK_API_URL"]
    history = GroupCommitter(record_to) if record_to is not None else None
    seen: set[str] = set()
    order: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
    seqs: Counter[str] = Counter()

    async def make_app() -> web.Application:
        # One aiohttp session for every Web API call, as relaybot has (without one, slack_sdk opens a
        # new session and connection per call).
        session = aiohttp.ClientSession()
        client = AsyncWebClient(token=token, base_url=api_url, session=session)
        app = AsyncApp(signing_secret=signing_secret, client=client)

        @app.event("message")
        async def echo(event: dict[str, Any], client: AsyncWebClient) -> None:
            channel, text = event["channel"], event["text"]
            if history is None:
                await client.chat_postMessage(channel=channel, text=text)
                return
            if event["ts"] in seen:
                return
            seen.add(event["ts"])
            async with order[channel]:
                seqs[channel] += 2
                await history.append_exchange(channel, seqs[channel], text, event["ts"])
                await client.chat_postMessage(channel=channel, text=text)

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def close_session(_: web.Application) -> None:
            await session.close()

        web_app = app.web_app(path="/slack/events")  # Bolt's aiohttp server: to_bolt_request -> dispatch
        web_app.router.add_get("/healthz", healthz)
        web_app.on_cleanup.append(close_session)
        return web_app

    web.run_app(make_app(), host="127.0.0.1", port=port, print=None, access_log=None)


# --- the fake Slack Web API, watched ----------------------------------------------------------------


@dataclass
class Pending:
    """One event sent and the reply it waits for."""

    number: int
    channel: str
    sent: float
    done: asyncio.Future[None]
    message_ts: str | None = None
    posted: float | None = None
    completed: float | None = None

    @property
    def token(self) -> str:
        return f"bq{self.number}z"


class WatchedSlack(FakeSlack):
    """The fake, minus its call log (it scans it on every call), telling the client about each reply."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.by_channel: dict[str, Pending] = {}  # the event each DM waits on (one at a time per DM)
        self.by_ts: dict[str, Pending] = {}  # the event a posted message answers
        self._by_ts: dict[str, Message] = {}

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        self.counts[method] += 1
        return await self._answer(request, method, params)

    def _chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        answer = super()._chat_postMessage(params)
        if answer.get("ok"):
            message = self.messages[-1]
            self._by_ts[message.ts] = message
            self._on_post(message.channel, message.ts, message.text)
        return answer

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._by_ts.get(str(params.get("ts")))
        if message is None or message.channel != params.get("channel"):
            return {"ok": False, "error": "message_not_found"}
        message.text = str(params.get("text") or "")
        message.edits.append(message.text)
        self._on_update(message.ts, message.text)
        return {"ok": True, "channel": message.channel, "ts": message.ts, "text": message.text}

    def _on_post(self, channel: str, ts: str, text: str) -> None:
        now = time.perf_counter()
        pending = self.by_channel.get(channel)
        if pending is None or pending.message_ts is not None:
            self.errors.append(f"chat.postMessage in {channel} answers no waiting event (a duplicate?): {text[:60]!r}")
            return
        found = TOKEN_RE.search(text)
        if found and found.group(0) != pending.token:
            self.errors.append(f"the reply to {pending.token} in {channel} answers {found.group(0)}: {text[:60]!r}")
            return
        pending.message_ts, pending.posted = ts, now
        self.by_ts[ts] = pending
        self._check_complete(pending, text, now)

    def _on_update(self, ts: str, text: str) -> None:
        now = time.perf_counter()
        pending = self.by_ts.get(ts)
        if pending is None:
            self.errors.append(f"chat.update of {ts}, which answers no event: {text[:60]!r}")
        elif pending.completed is None:
            self._check_complete(pending, text, now)

    def _check_complete(self, pending: Pending, text: str, now: float) -> None:
        if pending.token in text and not text.endswith(CURSOR):
            pending.completed = now
            if self.by_channel.get(pending.channel) is pending:
                del self.by_channel[pending.channel]
            if not pending.done.done():
                pending.done.set_result(None)


# --- processes ------------------------------------------------------------------------------------


# --- the client -----------------------------------------------------------------------------------


def event_body(number: int, channel: str, user_id: str) -> bytes:
    return json.dumps(
        {
            "token": "legacy",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": f"EvB{number}",
            "event_time": 1700000000 + number // 1000,
            "event": {
                "type": "message",
                "channel": channel,
                "channel_type": "im",
                "user": user_id,
                # The token first, so the first words of a streamed reply (which quotes it) carry it too.
                "text": f"bq{number}z: could you check the status of my order?",
                "ts": f"{1700000000 + number // 1_000_000}.{number % 1_000_000:06d}",
                "event_ts": f"{1700000000 + number // 1_000_000}.{number % 1_000_000:06d}",
            },
            "authorizations": [{"team_id": "T1", "user_id": BOT_USER_ID, "is_bot": True}],
        }
    ).encode()


def signed_headers(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body) or ""
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature, "Content-Type": "application/json"}


@dataclass
class Run:
    name: str
    post_ms: list[float] = field(default_factory=list)  # event sent -> chat.postMessage received
    done_ms: list[float] = field(default_factory=list)  # event sent -> the reply complete in Slack
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    server_cpu: float = 0.0  # seconds of the server's CPU (user + system) over the run
    bench_cpu: float = 0.0  # seconds of this process's CPU (client + fake Slack) over the run
    api_calls: int = 0  # Slack Web API calls the fake received during the run

    @property
    def replies(self) -> int:
        return len(self.done_ms)

    @property
    def rate(self) -> float:
        return self.replies / self.elapsed if self.elapsed else 0.0

    @property
    def cpu_ms(self) -> float:
        return self.server_cpu * 1000 / self.replies if self.replies else float("nan")


class Numbers:
    """Event numbers, distinct over the whole benchmark (event ids, message ts and reply tokens)."""

    def __init__(self) -> None:
        self.next = 0

    def take(self) -> int:
        self.next += 1
        return self.next


async def drive(
    server: Server, slack: WatchedSlack, numbers: Numbers, tag: str, events: int, users: int, *, measure: bool
) -> Run:
    """`users` DMs (one user each), each sending its next event once the last one's reply is complete."""
    run = Run(server.name)
    url = f"http://127.0.0.1:{server.port}/slack/events"
    loop = asyncio.get_running_loop()
    sent = 0
    errors_before = len(slack.errors)
    calls_before = sum(slack.counts.values())

    async def one_user(slot: int, http: aiohttp.ClientSession) -> None:
        nonlocal sent
        channel, user_id = f"D{tag}{slot:03d}", f"U{slot:03d}"
        while sent < events:
            sent += 1
            number = numbers.take()
            body = event_body(number, channel, user_id)
            pending = Pending(number, channel, time.perf_counter(), loop.create_future())
            slack.by_channel[channel] = pending
            try:
                async with http.post(url, data=body, headers=signed_headers(body)) as response:
                    await response.read()
                    if response.status != 200:
                        run.errors.append(f"event {number}: ack {response.status}")
                        slack.by_channel.pop(channel, None)
                        continue
                await asyncio.wait_for(asyncio.shield(pending.done), REPLY_TIMEOUT)
            except (TimeoutError, aiohttp.ClientError) as exc:
                what = "no complete reply" if pending.posted else "no reply"
                run.errors.append(f"event {number} in {channel}: {what} ({type(exc).__name__} {exc})".strip())
                slack.by_channel.pop(channel, None)
                continue
            assert pending.posted is not None and pending.completed is not None
            run.post_ms.append((pending.posted - pending.sent) * 1000)
            run.done_ms.append((pending.completed - pending.sent) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=users)) as http:
        cpu_before, bench_before = cpu_seconds(server.proc.pid), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(one_user(slot, http) for slot in range(users)))
        run.elapsed = time.perf_counter() - started
        run.server_cpu = cpu_seconds(server.proc.pid) - cpu_before
        run.bench_cpu = time.process_time() - bench_before
    run.api_calls = sum(slack.counts.values()) - calls_before
    await asyncio.sleep(QUIET_SECONDS)  # a reply posted twice shows up here as an unexpected post
    run.errors += slack.errors[errors_before:]
    slack.by_ts.clear()
    if run.replies != events:
        run.errors.append(f"{run.replies} complete replies for {events} events")
    if server.proc.poll() is not None:
        run.errors.append(f"{server.name} died during the run:\n{server.tail()}")
    if measure:
        print(f"  {server.name:<9} {run.rate:8.1f} events/s  {run.cpu_ms:7.3f} ms CPU/msg  errors {len(run.errors)}")
    return run


# --- report ---------------------------------------------------------------------------------------


def report(events: int, users: int, relay: Run, base: Run, recorded: Run, runs: list[Run]) -> None:
    def p(values: list[float], q: float) -> float:
        return percentile(values, q) if values else float("nan")

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.3g}x" if b > 0 else "n/a"

    print()
    print(f"Slack DM event -> reply posted, bare bot: {events} events, {users} DMs in flight (closed loop per DM)")
    header = (
        f"{'':<10} {'events/s':>9} {'post p50':>9} {'post p99':>9} {'done p50':>9} {'done p99':>9} "
        f"{'cpu ms/msg':>11} {'api/msg':>8} {'bench cpu':>10} {'errors':>7}"
    )
    print(header)
    for name, run in (("relaybot", relay), ("baseline", base), ("recording", recorded)):
        print(
            f"{name:<10} {run.rate:>9.1f} {p(run.post_ms, 50):>9.2f} {p(run.post_ms, 99):>9.2f} "
            f"{p(run.done_ms, 50):>9.2f} {p(run.done_ms, 99):>9.2f} {run.cpu_ms:>11.3f} "
            f"{run.api_calls / max(1, run.replies):>8.2f} {run.bench_cpu * 1000 / max(1, run.replies):>10.3f} "
            f"{len(run.errors):>7}"
        )
    print(
        f"{'ratio':<10} {ratio(relay.rate, base.rate):>9} {ratio(p(relay.post_ms, 50), p(base.post_ms, 50)):>9} "
        f"{ratio(p(relay.post_ms, 99), p(base.post_ms, 99)):>9} {ratio(p(relay.done_ms, 50), p(base.done_ms, 50)):>9} "
        f"{ratio(p(relay.done_ms, 99), p(base.done_ms, 99)):>9} {ratio(relay.cpu_ms, base.cpu_ms):>11}"
    )
    print("(latencies in ms from sending the signed event; post: the fake receives the reply's chat.postMessage;")
    print(" done: the reply is complete in Slack, i.e. the chat.update with the whole text when relaybot streams)")
    print("(cpu ms/msg: the server process's CPU over the run, all threads (/proc/PID/task/*/schedstat), per reply;")
    print(" api/msg: Slack Web API calls per reply; bench cpu: this process's CPU, client + fake Slack, per reply)")
    for kind in ("baseline", "recording"):
        others = ", ".join(f"{r.cpu_ms:.3f}" for r in runs if r.name == kind)
        print(f"({kind}: the run with the lower CPU per message of two, one before and one after relaybot: {others})")
    print("(recording: the Bolt echo plus, by hand, dedupe by ts, per-conversation order and the message and its")
    print(" reply committed to SQLite before the post: what the guarantees cost on their own)")
    print(
        f"\nrelaybot / baseline server CPU per message: {ratio(relay.cpu_ms, base.cpu_ms)} "
        f"({relay.cpu_ms:.3f} ms vs {base.cpu_ms:.3f} ms)"
    )
    print(
        f"relaybot / recording baseline server CPU per message: {ratio(relay.cpu_ms, recorded.cpu_ms)} "
        f"({relay.cpu_ms:.3f} ms vs {recorded.cpu_ms:.3f} ms)"
    )
    errors = [(r.name, e) for r in runs for e in r.errors]
    print(f"errors: {len(errors)}")
    for name, error in errors[:10]:
        print(f"  {name}: {error}")


# --- main -----------------------------------------------------------------------------------------


async def measure(
    relaybot: Server, echo: Server, recording: Server, slack: WatchedSlack, events: int, users: int
) -> int:
    ready = await asyncio.gather(wait_healthy(relaybot), wait_healthy(echo), wait_healthy(recording))
    print(
        f"relaybot up in {ready[0]:.1f} s (pid {relaybot.proc.pid}, port {relaybot.port}); "
        f"baseline up in {ready[1]:.1f} s (pid {echo.proc.pid}, port {echo.port}); "
        f"recording baseline up in {ready[2]:.1f} s (pid {recording.proc.pid})"
    )
    numbers = Numbers()
    warm_errors: list[str] = []
    # untimed: imports, auth.test, users.info, SQLite
    for server, tag in ((echo, "WE"), (recording, "WC"), (relaybot, "WR")):
        warm = await drive(server, slack, numbers, tag, WARMUP_PER_USER * users, users, measure=False)
        warm_errors += [f"warm-up: {e}" for e in warm.errors]
    print(f"measuring ({events} events each; baseline, recording baseline, relaybot, recording baseline, baseline):")
    runs = [
        await drive(echo, slack, numbers, "EA", events, users, measure=True),
        await drive(recording, slack, numbers, "CA", events, users, measure=True),
        await drive(relaybot, slack, numbers, "RB", events, users, measure=True),
        await drive(recording, slack, numbers, "CB", events, users, measure=True),
        await drive(echo, slack, numbers, "EB", events, users, measure=True),
    ]

    def lower_cpu(a: Run, b: Run) -> Run:
        return min((a, b), key=lambda r: r.cpu_ms if r.replies else float("inf"))

    report(events, users, runs[2], lower_cpu(runs[0], runs[4]), lower_cpu(runs[1], runs[3]), runs)
    if warm_errors:
        print(f"warm-up errors: {len(warm_errors)}")
        for error in warm_errors[:10]:
            print(f"  {error}")
    return 1 if warm_errors or any(r.errors for r in runs) else 0


async def bench_async(tmp: Path, events: int, users: int, log_level: str = "WARNING") -> int:
    servers: list[Server] = []
    async with WatchedSlack(users={f"U{slot:03d}": user(f"User {slot}") for slot in range(users)}) as slack:
        try:
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(ENV_DROPPED_PREFIXES) and k not in ENV_DROPPED
            }
            env.update(
                RELAYBOT_DATA_DIR=str(tmp / "data"),
                RELAYBOT_BOTS_DIR=str(bare_bots(tmp / "bots")),
                RELAYBOT_DEFAULT_BOT="support",
                RELAYBOT_SLACK__BOT="support",  # the bot that answers this Slack app (its DMs)
                RELAYBOT_LOG_LEVEL=log_level,
                HF_HUB_OFFLINE="1",
                PYTHONUNBUFFERED="1",
                SLACK_BOT_TOKEN=TOKEN,
                SLACK_SIGNING_SECRET=SECRET,
                SLACK_API_URL=slack.api_url,
            )
            bot_port, echo_port = free_port(), free_port()
            bot_argv = [sys.executable, "-m", "core.cli", "run", "--host", "127.0.0.1", "--port", str(bot_port)]
            echo_argv = [sys.executable, SCRIPT, "--echo-server", str(echo_port)]
            servers.append(start_server("relaybot", bot_argv, bot_port, env, (tmp / "relaybot.log").open("w+b")))
            servers.append(start_server("baseline", echo_argv, echo_port, env, (tmp / "baseline.log").open("w+b")))
            recording_port = free_port()
            recording_argv = [
                sys.executable,
                SCRIPT,
                "--recording-echo-server",
                str(recording_port),
                str(tmp / "recording-echo.db"),
            ]
            log = (tmp / "recording-echo.log").open("w+b")
            servers.append(start_server("recording", recording_argv, recording_port, env, log))
            return await measure(servers[0], servers[1], servers[2], slack, events, users)
        finally:
            for server in servers:
                stop_server(server)
                server.log.close()


def bench(events: int, users: int, keep: bool, log_level: str = "WARNING") -> int:
    tmp = Path(tempfile.mkdtemp(prefix="relaybot-bench-slack-turns-"))
    # SIGTERM (as from `timeout` or CI) unwinds like Ctrl-C, so the servers are stopped by their PIDs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return asyncio.run(bench_async(tmp, events, users, log_level))
    except RuntimeError as exc:  # a server that did not start
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="events per measured run (default 2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="DMs with an event in flight (default 32)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs, SQLite file)")
    add_log_level_option(parser)
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--recording-echo-server", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        run_echo_server(args.echo_server)
        return 0
    if args.recording_echo_server:
        port, db = args.recording_echo_server
        run_echo_server(int(port), Path(db))
        return 0
    if args.events < 1 or args.concurrency < 1:
        parser.error("--events and --concurrency must be at least 1")
    return bench(args.events, args.concurrency, args.keep, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
