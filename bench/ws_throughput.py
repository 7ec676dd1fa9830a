"""WebSocket throughput and latency of the real bot, against a bare aiohttp echo server.

Starts `relaybot run` (embedded defaults: in-memory sessions, SQLite history, offline provider) and
a bare aiohttp WebSocket echo server, each in its own process, and drives both with the same
closed-loop client: N sessions, each sending M messages one after another through the widget
protocol and waiting for the reply frame before sending the next. Prints messages/s, p50/p99
latency and server CPU per message (from /proc, all threads) for each, and the relaybot/echo ratios.
A second baseline, the recording echo (bench/recording_echo.py), does the durable part of a turn by
hand: it dedupes, acks, keeps each session's order and appends the message and its reply to a SQLite
history (group-committed on a thread) before replying; relaybot against it is the cost of the
framework beyond those guarantees. `--bare` runs a bot with nothing but the pipeline (no intents, no
knowledge): the framework's own cost. Never fails on timing; exits 1 only on protocol errors (a
missing, duplicated or misaddressed reply) or if a server does not start.

    python bench/ws_throughput.py [--sessions 50] [--messages 20] [--bare] [--log-level WARNING]
    python bench/ws_throughput.py --echo-server PORT    # the baseline server on its own (used internally)
    python bench/ws_throughput.py --recording-echo-server PORT DB   # the second baseline (used internally)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import WSMsgType, web
from benchkit import (
    HIGH_LIMIT,
    REPO,
    Server,
    ThreadTimes,
    add_log_level_option,
    bare_bots,
    bots_with_high_limits,
    cpu_seconds,
    percentile,
    start_server,
    stop_server,
    thread_times,
    wait_healthy,
)
from recording_echo import run_recording_echo_server

from tests.support.servers import free_port

REPLY_TIMEOUT = 30.0
WARMUP_SESSIONS = 4
WARMUP_MESSAGES = 5
ENV_DROPPED = ("REDIS_URL", "DATABASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "RELAYBOT_ENV")


# --- the baseline: a bare aiohttp WebSocket echo server -------------------------------------------


async def _echo_ws(request: web.Request) -> web.WebSocketResponse:
    """Same frames as the widget protocol, minus everything a bot does: reply at once."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json({"type": "session", "session_id": "echo", "token": "echo"})
    seq = 0
    async for message in ws:
        if message.type != WSMsgType.TEXT:
            continue
        frame = json.loads(message.data)
        if frame.get("type") == "ping":
            await ws.send_json({"type": "pong"})
        elif frame.get("type") == "message":
            seq += 2
            await ws.send_json({"type": "reply", "reply_to": frame["id"], "seq": seq, "text": frame["text"]})
    return ws


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def run_echo_server(port: int) -> None:
    app = web.Application()
    app.router.add_get("/ws", _echo_ws)
    app.router.add_get("/healthz", _healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True)


# --- processes ------------------------------------------------------------------------------------


# --- the client -----------------------------------------------------------------------------------


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)  # seconds, one per answered message
    errors: list[str] = field(default_factory=list)
    acks: int = 0
    deltas: int = 0
    elapsed: float = 0.0
    server_cpu: float = 0.0  # seconds of the server process's CPU (user + system) during the run
    #: the server's main thread (relaybot's event loop) and its other threads over the run
    main_thread: ThreadTimes = field(default_factory=ThreadTimes)
    other_threads: ThreadTimes = field(default_factory=ThreadTimes)

    @property
    def messages(self) -> int:
        return len(self.latencies)


async def _next_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
    message = await ws.receive(timeout=REPLY_TIMEOUT)
    if message.type != WSMsgType.TEXT:
        raise ConnectionError(f"expected a text frame, got {message.type.name}")
    frame = json.loads(message.data)
    if not isinstance(frame, dict):
        raise ValueError(f"frame is not a JSON object: {message.data[:200]!r}")
    return frame


async def one_session(
    http: aiohttp.ClientSession, url: str, session_no: int, messages: int, run: Run, tag: str
) -> None:
    """Closed loop: send one message, wait for its reply frame, send the next."""
    try:
        async with http.ws_connect(url, max_msg_size=0) as ws:
            first = await _next_json(ws)
            if first.get("type") != "session":
                run.errors.append(f"session {session_no}: first frame was {first!r}")
                return
            for m in range(messages):
                client_id = f"{tag}-s{session_no}-m{m}"
                text = f"Message {m} of session {session_no}: how do I export my tasks to CSV?"
                sent = time.perf_counter()
                await ws.send_str(json.dumps({"type": "message", "id": client_id, "text": text}))
                while True:
                    frame = await _next_json(ws)
                    kind = frame.get("type")
                    if kind == "ack":
                        run.acks += 1
                        if frame.get("id") != client_id or frame.get("duplicate"):
                            run.errors.append(f"{client_id}: unexpected ack {frame!r}")
                    elif kind == "delta":
                        run.deltas += 1
                    elif kind == "reply":
                        if frame.get("reply_to") == client_id:
                            run.latencies.append(time.perf_counter() - sent)
                            break
                        run.errors.append(f"{client_id}: reply to {frame.get('reply_to')!r}")
                    else:
                        run.errors.append(f"{client_id}: unexpected frame {frame!r}")
                        if kind == "error":
                            break
            # Anything but a pong after the last reply would be a second reply to some message.
            await ws.send_str(json.dumps({"type": "ping"}))
            while (frame := await _next_json(ws)).get("type") != "pong":
                if frame.get("type") in ("reply", "error"):
                    run.errors.append(f"session {session_no}: extra frame after the last reply {frame!r}")
    except (TimeoutError, aiohttp.ClientError, ConnectionError, ValueError) as exc:
        run.errors.append(f"session {session_no}: {type(exc).__name__}: {exc}")


async def drive(server: Server, sessions: int, messages: int, tag: str) -> Run:
    url = f"http://127.0.0.1:{server.port}/ws?bot=support"
    run = Run()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        cpu_before = cpu_seconds(server.proc.pid)
        main_before, others_before = thread_times(server.proc.pid)
        started = time.perf_counter()
        await asyncio.gather(*(one_session(http, url, s, messages, run, tag) for s in range(sessions)))
        run.elapsed = time.perf_counter() - started
        run.server_cpu = cpu_seconds(server.proc.pid) - cpu_before
        main_after, others_after = thread_times(server.proc.pid)
        run.main_thread, run.other_threads = main_after - main_before, others_after - others_before
    expected = sessions * messages
    if run.messages != expected:
        run.errors.append(f"{run.messages} replies for {expected} messages")
    return run


# --- report ---------------------------------------------------------------------------------------


@dataclass
class Figures:
    rate: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    cpu_ms: float  # server CPU per message

    @classmethod
    def of(cls, run: Run) -> Figures:
        if not run.latencies:
            return cls(0.0, float("nan"), float("nan"), float("nan"), float("nan"))
        return cls(
            rate=run.messages / run.elapsed,
            p50_ms=percentile(run.latencies, 50) * 1000,
            p99_ms=percentile(run.latencies, 99) * 1000,
            mean_ms=statistics.fmean(run.latencies) * 1000,
            cpu_ms=run.server_cpu * 1000 / run.messages,
        )


def report(sessions: int, messages: int, bot: Run, echo: Run, recording: Run, *, bare: bool) -> None:
    b, e, r = Figures.of(bot), Figures.of(echo), Figures.of(recording)
    print()
    kind = "bare bot (no intents, no knowledge)" if bare else "example bot"
    print(f"WebSocket round trips, {kind}: {sessions} sessions x {messages} messages, closed loop per session")
    print(f"{'':<10} {'msgs/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'cpu ms/msg':>11} {'errors':>7}")
    for name, f, run in (("relaybot", b, bot), ("echo", e, echo), ("rec. echo", r, recording)):
        print(
            f"{name:<10} {f.rate:>10.1f} {f.p50_ms:>9.2f} {f.p99_ms:>9.2f} {f.mean_ms:>9.2f} "
            f"{f.cpu_ms:>11.3f} {len(run.errors):>7}"
        )

    def ratio(a: float, base: float) -> str:
        return f"{a / base:.3g}x" if base > 0 else "n/a"

    for name, base in (("ratio", e), ("ratio rec.", r)):
        print(
            f"{name:<10} {ratio(b.rate, base.rate):>10} {ratio(b.p50_ms, base.p50_ms):>9} "
            f"{ratio(b.p99_ms, base.p99_ms):>9} {ratio(b.mean_ms, base.mean_ms):>9} {ratio(b.cpu_ms, base.cpu_ms):>11}"
        )
    print("(echo, rec. echo: each the better of two runs, one before and one after relaybot)")
    print("(ratio = relaybot / echo: below 1x for msgs/s and above 1x for latency and CPU is the bot's own cost;")
    print(" ratio rec. = relaybot / the recording echo, which dedupes, acks, orders and records each message and")
    print(" its reply in SQLite by hand (bench/recording_echo.py): the cost beyond those guarantees)")
    print("(cpu ms/msg: the server process's CPU over the run, all threads (/proc/PID/task/*/schedstat), per message)")
    if bot.messages and bot.elapsed > 0:
        per = 1000 / bot.messages
        # A loop busy less than all the time while 50 sessions wait is the turns waiting on something
        # else: the SQLite thread, itself often waiting for a CPU on a small machine.
        print(
            f"relaybot's event loop thread: busy {bot.main_thread.running / bot.elapsed:.0%} of the run, "
            f"{bot.main_thread.running * per:.3f} ms/msg on a CPU, {bot.main_thread.waiting * per:.3f} ms/msg "
            "waiting for one"
        )
        print(
            f"relaybot's other threads (SQLite history, log writer): {bot.other_threads.running * per:.3f} ms/msg "
            f"on a CPU, {bot.other_threads.waiting * per:.3f} ms/msg waiting for one"
        )
    print(
        f"relaybot frames per message: {bot.acks / max(1, bot.messages):.1f} ack, "
        f"{bot.deltas / max(1, bot.messages):.1f} delta, 1 reply"
    )
    print(f"errors: {len(bot.errors) + len(echo.errors) + len(recording.errors)}")
    for name, run in (("relaybot", bot), ("echo", echo), ("rec. echo", recording)):
        for error in run.errors[:10]:
            print(f"  {name}: {error}")


# --- main -----------------------------------------------------------------------------------------


def _better(a: Run, b: Run) -> Run:
    """The run with the higher throughput, carrying both runs' errors."""
    best = a if Figures.of(a).rate >= Figures.of(b).rate else b
    best.errors = a.errors + b.errors
    return best


async def measure(
    bot_server: Server, echo_server: Server, recording_server: Server, sessions: int, messages: int, *, bare: bool
) -> int:
    servers = (bot_server, echo_server, recording_server)
    ready = await asyncio.gather(*(wait_healthy(server) for server in servers))
    print(
        f"relaybot up in {ready[0]:.1f} s (pid {bot_server.proc.pid}, port {bot_server.port}); "
        f"echo up in {ready[1]:.1f} s (pid {echo_server.proc.pid}, port {echo_server.port}); "
        f"recording echo up in {ready[2]:.1f} s (pid {recording_server.proc.pid})"
    )
    # Warm them up (imports, first SQLite writes, connection set-up), then measure the baselines, the
    # bot, and the baselines again; each baseline is the better of its two runs.
    for server in (echo_server, recording_server, bot_server):
        warm = await drive(server, WARMUP_SESSIONS, WARMUP_MESSAGES, f"warm-{server.name}")
        if warm.errors:
            print(f"warm-up against {server.name} had errors: {warm.errors[:5]}")
    echo_a = await drive(echo_server, sessions, messages, "echo-a")
    recording_a = await drive(recording_server, sessions, messages, "recording-a")
    bot = await drive(bot_server, sessions, messages, "bot")
    recording_b = await drive(recording_server, sessions, messages, "recording-b")
    echo_b = await drive(echo_server, sessions, messages, "echo-b")
    echo, recording = _better(echo_a, echo_b), _better(recording_a, recording_b)
    report(sessions, messages, bot, echo, recording, bare=bare)
    for server in servers:
        if server.proc.poll() is not None:
            print(f"{server.name} died during the run:\n{server.tail()}")
            return 1
    return 1 if bot.errors or echo.errors or recording.errors else 0


def bench(sessions: int, messages: int, keep: bool, bare: bool, log_level: str = "WARNING") -> int:
    tmp = Path(tempfile.mkdtemp(prefix="relaybot-bench-ws-"))
    servers: list[Server] = []
    try:
        env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
        bots = bare_bots(tmp / "bots") if bare else bots_with_high_limits(tmp / "bots")
        env.update(
            RELAYBOT_DATA_DIR=str(tmp / "data"),
            RELAYBOT_BOTS_DIR=str(bots),
            # Every client of the benchmark is 127.0.0.1: the widget's per-address limits are lifted.
            RELAYBOT_WEB__NEW_SESSIONS_PER_MINUTE_PER_IP=str(HIGH_LIMIT),
            RELAYBOT_WEB__MESSAGES_PER_MINUTE_PER_IP=str(HIGH_LIMIT),
            RELAYBOT_WEB__MESSAGES_PER_MINUTE_PER_CONNECTION=str(HIGH_LIMIT),
            RELAYBOT_LOG_LEVEL=log_level,
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        if not bare:
            # Ingest before the measurement, so the background ingest of `run` has nothing to do during it.
            print("ingesting the example bot's knowledge (skipped by later runs of the same files)...")
            ingest = [sys.executable, "-m", "core.cli", "ingest", "--bot", "support"]
            subprocess.run(ingest, cwd=REPO, env=env, check=True)
        bot_port, echo_port = free_port(), free_port()
        bot_argv = [sys.executable, "-m", "core.cli", "run", "--host", "127.0.0.1", "--port", str(bot_port)]
        echo_argv = [sys.executable, str(Path(__file__).resolve()), "--echo-server", str(echo_port)]
        servers.append(start_server("relaybot", bot_argv, bot_port, env, (tmp / "relaybot.log").open("w+b")))
        servers.append(start_server("echo", echo_argv, echo_port, env, (tmp / "echo.log").open("w+b")))
        recording_port = free_port()
        recording_argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--recording-echo-server",
            str(recording_port),
            str(tmp / "recording-echo.db"),
        ]
        log = (tmp / "recording-echo.log").open("w+b")
        servers.append(start_server("recording echo", recording_argv, recording_port, env, log))
        return asyncio.run(measure(servers[0], servers[1], servers[2], sessions, messages, bare=bare))
    finally:
        for server in servers:
            stop_server(server)
            server.log.close()
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50, help="concurrent WebSocket sessions (default 50)")
    parser.add_argument("--messages", type=int, default=20, help="messages per session (default 20)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs, SQLite file)")
    parser.add_argument("--bare", action="store_true", help="a bot with no intents and no knowledge (framework cost)")
    add_log_level_option(parser)
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--recording-echo-server", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        run_echo_server(args.echo_server)
        return 0
    if args.recording_echo_server:
        port, db = args.recording_echo_server
        run_recording_echo_server(int(port), Path(db))
        return 0
    if args.sessions < 1 or args.messages < 1:
        parser.error("--sessions and --messages must be at least 1")
    return bench(args.sessions, args.messages, args.keep, args.bare, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
