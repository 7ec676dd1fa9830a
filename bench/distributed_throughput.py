"""API-channel throughput and latency: embedded, the Redis bus with 1/2/4 workers, and a bare baseline.

Starts a redis-server and a PostgreSQL cluster (SQLite if PostgreSQL cannot start) on free ports of
127.0.0.1, then drives, one after another and with the same closed-loop client, over the API channel
(POST /api/messages, reply POSTed back signed to a callback receiver in this process):

    baseline    a bare aiohttp + Redis process (this file with --baseline-server): XADD, XREADGROUP in
                the same process, GET/SET, RPUSH+LRANGE+RPUSH, XACK+XDEL, then the signed callback POST
    embedded    one `relaybot run` (in-memory bus, sessions in memory, SQLite history)
    redis xN    one `relaybot serve api` + N `relaybot worker` (RELAYBOT_BUS=redis, PostgreSQL history)

C conversations post M messages each; a conversation sends its next message only after the reply to
the previous one arrived. Prints messages/s, p50/p99 latency (POST sent -> signed callback received),
ratios to the baseline, CPU per message by process and Redis calls per message. Never fails on
timing; exits 1 only if a message was not answered exactly once, in order, or a process failed.

    python bench/distributed_throughput.py [--conversations 50] [--messages 10] [--workers 1,2,4] [--keep]
                                           [--log-level WARNING]
                                           [--profile DIR]   # py-spy raw stacks of each measured process
    python bench/distributed_throughput.py --baseline-server PORT REDIS_URL   # the baseline (used internally)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SELF = Path(__file__).resolve()
REPO = SELF.parents[1]
if str(REPO) not in sys.path:  # `python bench/...` puts bench/ first on sys.path, not the repo
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from aiohttp import web  # noqa: E402
from benchkit import CLK_TCK, add_log_level_option, bare_bots, bots_with_high_limits, cpu_seconds, percentile  # noqa: E402
from redis.exceptions import ResponseError  # noqa: E402

from tests.support.processes import relaybot_env  # noqa: E402
from tests.support.servers import PostgresServer, RedisServer, free_port, start_postgres, start_redis  # noqa: E402

API_KEY = "bench-key"
SIGNING_SECRET = "bench-callback-signing-secret"
REPLY_TIMEOUT = 30.0
STARTUP_TIMEOUT = 90.0
SETTLE_SECONDS = 1.0
WARMUP_CONVERSATIONS = 20
WARMUP_MESSAGES = 3
QUESTION = "how do I export my tasks to CSV?"

BASELINE_PREFIX = "bench:baseline"
BASELINE_STREAM = f"{BASELINE_PREFIX}:q"
BASELINE_GROUP = "consumers"
BASELINE_WINDOW = 20


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The API channel's callback signature (channels/api/channel.py): HMAC-SHA256 of "{timestamp}.{body}"."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


# --- the baseline: bare aiohttp + Redis, roughly a turn's Redis traffic and the callback ----------


class BaselineServer:
    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._secret = SIGNING_SECRET.encode()
        self._tasks: set[asyncio.Task[None]] = set()
        self._redis: aioredis.Redis | None = None
        self._http: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/messages", self._receive)
        app.router.add_get("/healthz", self._healthz)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    async def _lifecycle(self, app: web.Application) -> Any:
        self._redis = aioredis.Redis.from_url(self._redis_url)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            await self._redis.xgroup_create(BASELINE_STREAM, BASELINE_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        consumer = asyncio.create_task(self._consume())
        yield
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await self._http.close()
        await self._redis.aclose()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _receive(self, request: web.Request) -> web.Response:
        assert self._redis is not None
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.json_response({"error": "unauthorized"}, status=401)
        raw = await request.read()
        try:
            message = json.loads(raw)
            fields = ("conversation_id", "user_id", "text", "message_id", "callback_url")
            if not all(isinstance(message.get(f), str) and message[f] for f in fields):
                raise ValueError("missing field")
        except ValueError:
            return web.json_response({"error": "invalid_request"}, status=400)
        entry_id = await self._redis.xadd(BASELINE_STREAM, {"d": raw})
        return web.json_response({"status": "accepted", "envelope_id": _text(entry_id)}, status=202)

    async def _consume(self) -> None:
        assert self._redis is not None
        while True:
            batches: Any = await self._redis.xreadgroup(
                BASELINE_GROUP, "baseline", {BASELINE_STREAM: ">"}, count=16, block=1000
            )
            for _stream, messages in batches or ():
                for entry_id, fields in messages:
                    task = asyncio.create_task(self._turn(_text(entry_id), fields[b"d"]))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _turn(self, entry_id: str, raw: bytes) -> None:
        assert self._redis is not None and self._http is not None
        message = json.loads(raw)
        session = f"{BASELINE_PREFIX}:s:{message['conversation_id']}"
        history = f"{session}:h"
        seq = int(await self._redis.get(session) or 0) + 2
        await self._redis.set(session, seq, ex=3600)
        await self._redis.rpush(history, json.dumps({"role": "user", "text": message["text"]}))
        window = await self._redis.lrange(history, -BASELINE_WINDOW, -1)
        text = f"(baseline) You said: {message['text']} ({len(window)} messages in the window)"
        await self._redis.rpush(history, json.dumps({"role": "assistant", "text": text}))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(BASELINE_STREAM, BASELINE_GROUP, entry_id)
            pipe.xdel(BASELINE_STREAM, entry_id)
            await pipe.execute()
        body = json.dumps(
            {
                "type": "reply",
                "reply_id": f"r-{entry_id}",
                "in_reply_to": message["message_id"],
                "session_id": session,
                "bot": "support",
                "seq": seq,
                "text": text,
            }
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Relaybot-Timestamp": timestamp,
            "X-Relaybot-Signature": sign(self._secret, timestamp, body),
            "Idempotency-Key": f"k-{entry_id}",
        }
        try:
            async with self._http.post(message["callback_url"], data=body, headers=headers) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            print(f"baseline: callback for {message['message_id']} failed: {exc}", file=sys.stderr, flush=True)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def run_baseline_server(port: int, redis_url: str) -> None:
    web.run_app(BaselineServer(redis_url).app(), host="127.0.0.1", port=port, print=None, handle_signals=True)


# --- processes ------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    kind: str  # baseline | run | serve | worker: the CPU accounting groups
    proc: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def spawn(name: str, kind: str, argv: list[str], env: dict[str, str], log: Path, port: int | None = None) -> Proc:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Proc(name, kind, proc, log, port)


def stop_all(procs: list[Proc]) -> None:
    """SIGTERM every process we started (by PID), then SIGKILL whichever has not exited after 15 s."""
    for p in procs:
        if p.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for p in procs:
        try:
            p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.proc.wait(timeout=5)


async def wait_http(p: Proc) -> float:
    """Seconds until GET /healthz answers 200; raises if the process dies or the timeout passes."""
    url = f"http://127.0.0.1:{p.port}/healthz"
    started = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        while time.perf_counter() - started < STARTUP_TIMEOUT:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}:\n{p.output()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{p.name} did not answer {url} within {STARTUP_TIMEOUT:.0f} s:\n{p.output()}")


async def wait_output(p: Proc, text: str) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < STARTUP_TIMEOUT:
        if text in p.output(100_000):
            return time.perf_counter() - started
        if p.proc.poll() is not None:
            raise RuntimeError(f"{p.name} exited with {p.proc.returncode}:\n{p.output()}")
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{p.name} never printed {text!r} within {STARTUP_TIMEOUT:.0f} s:\n{p.output()}")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


# --- the client: callback receiver + closed-loop conversations ------------------------------------


@dataclass
class Waiting:
    future: asyncio.Future[float]
    text: str
    conversation: str


class Receiver:
    """The customer's callback endpoint: checks signature, exactly-once and order as replies arrive."""

    def __init__(self) -> None:
        self.secret = SIGNING_SECRET.encode()
        self.waiting: dict[str, Waiting] = {}
        self.answered: set[str] = set()
        self.keys: set[str] = set()
        self.last_seq: dict[str, int] = {}
        self.errors: dict[str, list[str]] = defaultdict(list)  # by mode tag
        self.resends: dict[str, int] = defaultdict(int)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        body = await request.read()
        timestamp = request.headers.get("X-Relaybot-Timestamp", "")
        if not hmac.compare_digest(sign(self.secret, timestamp, body), request.headers.get("X-Relaybot-Signature", "")):
            self.errors["?"].append(f"bad signature on {body[:120]!r}")
            return web.Response(status=401)
        try:
            reply = json.loads(body)
            message_id = str(reply["in_reply_to"])
        except (ValueError, KeyError, TypeError):
            self.errors["?"].append(f"unreadable callback {body[:120]!r}")
            return web.Response(status=400)
        tag = message_id.split("/", 1)[0].split("-", 1)[0]
        key = request.headers.get("Idempotency-Key", "")
        if key and key in self.keys:
            self.resends[tag] += 1  # a resend after a timeout, same key: the receiver's contract says ignore
            return web.Response(status=200)
        self.keys.add(key)
        if message_id in self.answered:
            self.errors[tag].append(f"{message_id}: answered twice (second key {key!r})")
            return web.Response(status=200)
        self.answered.add(message_id)
        waiting = self.waiting.pop(message_id, None)
        if waiting is None:
            self.errors[tag].append(f"{message_id}: reply to a message not awaited (out of order or unknown)")
            return web.Response(status=200)
        if waiting.text not in str(reply.get("text", "")):
            self.errors[tag].append(f"{message_id}: reply does not answer it: {str(reply.get('text'))[:120]!r}")
        seq = reply.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq.get(waiting.conversation, -1):
                self.errors[tag].append(f"{message_id}: seq {seq} after {self.last_seq[waiting.conversation]}")
            self.last_seq[waiting.conversation] = seq
        if not waiting.future.done():
            waiting.future.set_result(arrived)
        return web.Response(status=200)


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)  # POST sent -> callback received, seconds
    accepts: list[float] = field(default_factory=list)  # POST sent -> 202 read, seconds
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0


async def conversation(
    http: aiohttp.ClientSession, base: str, receiver: Receiver, tag: str, number: int, messages: int, run: Run
) -> None:
    loop = asyncio.get_running_loop()
    conv = f"{tag}-c{number}"
    for i in range(messages):
        message_id = f"{tag}/{conv}#{i}"
        text = f"{conv} message {i}: {QUESTION}"
        body = {
            "conversation_id": conv,
            "user_id": f"u-{conv}",
            "text": text,
            "message_id": message_id,
            "callback_url": receiver.url,
        }
        waiting = Waiting(loop.create_future(), text, conv)
        receiver.waiting[message_id] = waiting
        sent = time.perf_counter()
        try:
            async with http.post(f"{base}/api/messages", json=body) as response:
                status = response.status
                answer = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            receiver.waiting.pop(message_id, None)
            run.errors.append(f"{message_id}: POST failed: {type(exc).__name__}: {exc}")
            return
        accepted = time.perf_counter()
        if status != 202:
            receiver.waiting.pop(message_id, None)
            run.errors.append(f"{message_id}: POST answered {status}: {answer[:200]}")
            return
        try:
            arrived = await asyncio.wait_for(waiting.future, REPLY_TIMEOUT)
        except TimeoutError:
            receiver.waiting.pop(message_id, None)
            run.errors.append(f"{message_id}: no callback within {REPLY_TIMEOUT:.0f} s")
            return
        run.accepts.append(accepted - sent)
        run.latencies.append(arrived - sent)


async def drive(base: str, receiver: Receiver, tag: str, conversations: int, messages: int) -> Run:
    run = Run()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(conversation(http, base, receiver, tag, c, messages, run) for c in range(conversations)))
        run.elapsed = time.perf_counter() - started
    return run


# --- measuring one mode ---------------------------------------------------------------------------


@dataclass
class Mode:
    tag: str
    title: str
    run: Run
    cpu: dict[str, float]  # CPU seconds during the measured run, by process group
    redis_calls: int | None
    warm_errors: list[str] = field(default_factory=list)
    #: Redis calls during the measured run by command (Lua scripts' inner calls included)
    commands: dict[str, int] = field(default_factory=dict)
    #: Redis round trips during the measured run by process group, as relaybot's clients count them
    round_trips: dict[str, float] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return len(self.run.latencies)


class Meter:
    """CPU seconds by process group and total Redis command calls, sampled around a measured run."""

    def __init__(self, redis_client: aioredis.Redis, groups: dict[str, list[int]]) -> None:
        self._redis = redis_client
        self.groups = groups  # group -> pids (postgres: the postmaster; its backends are added)
        #: group -> base URLs of relaybot processes whose /metrics count their Redis round trips
        self.metrics: dict[str, list[str]] = defaultdict(list)

    def _cpu(self) -> dict[str, float]:
        result = {}
        for group, pids in self.groups.items():
            if group == "postgres":  # the postmaster, its live backends, and those that exited meanwhile
                every = [*pids, *(child for pid in pids for child in children_of(pid))]
                result[group] = sum(cpu_seconds(pid, reaped_children=pid in pids) for pid in every)
            else:
                result[group] = sum(cpu_seconds(pid) for pid in pids)
        busy, total = machine_ticks()
        result["machine busy"], result["machine total"] = busy / CLK_TCK, total / CLK_TCK
        return result

    async def _calls(self) -> dict[str, int]:
        stats: Any = await self._redis.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items() if isinstance(v, dict)}

    async def _round_trips(self) -> dict[str, float]:
        """Requests each group's processes sent to Redis so far (relaybot_redis_round_trips_total):
        round trips as the client counts them, where commandstats counts commands inside scripts."""
        result: dict[str, float] = {}
        async with aiohttp.ClientSession() as http:
            for group, bases in self.metrics.items():
                for base in bases:
                    async with http.get(f"{base}/metrics") as response:
                        text = await response.text()
                    for line in text.splitlines():
                        if line.startswith("relaybot_redis_round_trips_total "):
                            result[group] = result.get(group, 0.0) + float(line.split()[1])
        return result

    async def sample(self) -> tuple[dict[str, float], dict[str, int], dict[str, float]]:
        return self._cpu(), await self._calls(), await self._round_trips()


class Profiler:
    """py-spy on the relaybot processes of a measured run (`--profile DIR`): one raw collapsed-stack
    file per process, for flamegraph.pl or speedscope; off the measured processes' CPU, not the machine's."""

    def __init__(self, out: Path, groups: dict[str, list[int]], kinds: tuple[str, ...] = ("run", "serve", "worker")):
        self._out = out
        self._groups = groups
        self._kinds = kinds
        self._spies: list[subprocess.Popen[bytes]] = []

    def start(self, tag: str) -> None:
        self._out.mkdir(parents=True, exist_ok=True)
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        for kind in self._kinds:
            for pid in self._groups.get(kind, []):
                target = self._out / f"{tag}-{kind}-{pid}.txt"
                argv = [py_spy, "record", "--format", "raw", "--rate", "250", "--nonblocking"]
                self._spies.append(
                    subprocess.Popen(
                        [*argv, "--pid", str(pid), "--output", str(target)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )

    def stop(self) -> None:
        for spy in self._spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for spy in self._spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
        self._spies.clear()


async def measure(
    tag: str,
    title: str,
    base: str,
    receiver: Receiver,
    meter: Meter,
    conversations: int,
    messages: int,
    profiler: Profiler | None = None,
) -> Mode:
    warm = await drive(base, receiver, f"{tag}-warm", min(conversations, WARMUP_CONVERSATIONS), WARMUP_MESSAGES)
    if not warm.latencies:  # nothing answers: record it and move on instead of waiting out every timeout
        run = Run(errors=[f"no reply during the warm-up; mode skipped ({'; '.join(warm.errors[:2])})"])
        print(f"  {title:<28} skipped: nothing answered the warm-up", flush=True)
        return Mode(tag, title, run, {}, None, warm.errors)
    if profiler is not None:
        profiler.start(tag)
    cpu_before, calls_before, trips_before = await meter.sample()
    run = await drive(base, receiver, tag, conversations, messages)
    cpu_after, calls_after, trips_after = await meter.sample()
    if profiler is not None:
        profiler.stop()
    trips = {group: trips_after[group] - trips_before.get(group, 0.0) for group in trips_after}
    cpu = {group: cpu_after[group] - cpu_before.get(group, 0.0) for group in cpu_after}
    commands = {name: calls_after[name] - calls_before.get(name, 0) for name in calls_after}
    commands = {name: calls for name, calls in commands.items() if calls > 0}
    expected = conversations * messages
    if len(run.latencies) != expected:
        run.errors.append(f"{len(run.latencies)} replies for {expected} messages")
    mode = Mode(tag, title, run, cpu, sum(commands.values()), warm.errors, commands, trips)
    figures = Figures.of(run)
    print(
        f"  {title:<28} {figures.rate:8.1f} msgs/s  p50 {figures.p50_ms:7.1f} ms  p99 {figures.p99_ms:7.1f} ms  "
        f"({run.elapsed:.1f} s)",
        flush=True,
    )
    return mode


# --- report ---------------------------------------------------------------------------------------


@dataclass
class Figures:
    rate: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    accept_p50_ms: float

    @classmethod
    def of(cls, run: Run) -> Figures:
        if not run.latencies:
            nan = float("nan")
            return cls(0.0, nan, nan, nan, nan)
        return cls(
            rate=len(run.latencies) / run.elapsed,
            p50_ms=percentile(run.latencies, 50) * 1000,
            p99_ms=percentile(run.latencies, 99) * 1000,
            mean_ms=statistics.fmean(run.latencies) * 1000,
            accept_p50_ms=percentile(run.accepts, 50) * 1000,
        )


def ratio(a: float, base: float) -> str:
    return f"{a / base:.3g}x" if base > 0 and a == a else "n/a"


def mode_errors(mode: Mode, receiver: Receiver) -> list[str]:
    return mode.warm_errors + mode.run.errors + receiver.errors.get(mode.tag, [])


def report(modes: list[Mode], baseline: Mode, receiver: Receiver, conversations: int, messages: int) -> int:
    base = Figures.of(baseline.run)
    print()
    print(
        f"API channel, {conversations} conversations x {messages} messages, closed loop per conversation "
        "(latency: POST sent -> signed callback received)"
    )
    header = (
        f"{'mode':<28} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'accept':>7} "
        f"{'msgs/s':>8} {'p50':>7} {'p99':>7} {'errors':>6}"
    )
    print(f"{'':<28} {'':>8} {'':>8} {'':>8} {'':>8} {'p50 ms':>7} {'-- ratio vs baseline --':>24}")
    print(header)
    total_errors = 0
    for mode in modes:
        f = Figures.of(mode.run)
        errors = mode_errors(mode, receiver)
        total_errors += len(errors)
        print(
            f"{mode.title:<28} {f.rate:>8.1f} {f.p50_ms:>8.1f} {f.p99_ms:>8.1f} {f.mean_ms:>8.1f} "
            f"{f.accept_p50_ms:>7.1f} {ratio(f.rate, base.rate):>8} {ratio(f.p50_ms, base.p50_ms):>7} "
            f"{ratio(f.p99_ms, base.p99_ms):>7} {len(errors):>6}"
        )
    print("(baseline: the better of two runs, first and last; ratio < 1x for msgs/s, > 1x for latency = cost)")

    groups = ["client", "baseline", "run", "serve", "worker", "redis", "postgres"]
    print()
    print("CPU ms per message by process ('client' is this script; 'other': processes this run did not start),")
    print(f"the machine's CPU use during the run (share of its {os.cpu_count()} cores), and Redis commands per message")
    print(f"{'mode':<28} " + " ".join(f"{g:>8}" for g in [*groups, "other"]) + f" {'busy':>5} {'redis':>6}")
    for mode in modes:
        n = max(1, mode.messages)
        cells = [f"{mode.cpu.get(g, 0.0) * 1000 / n:>8.2f}" for g in groups]
        other = (mode.cpu.get("machine busy", 0.0) - sum(mode.cpu.get(g, 0.0) for g in groups)) * 1000 / n
        total = mode.cpu.get("machine total", 0.0)
        busy = f"{100 * mode.cpu.get('machine busy', 0.0) / total:.0f}%" if total > 0 else "n/a"
        calls = f"{(mode.redis_calls or 0) / n:>6.1f}"
        print(f"{mode.title:<28} " + " ".join(cells) + f" {max(0.0, other):>8.2f} {busy:>5} {calls}")
    print("(redis counts every command Redis ran, Lua scripts' inner calls included; 'other' above ~1 ms means")
    print(" something else was using the machine, and every figure of that row is less trustworthy)")
    for mode in modes:
        if mode.commands and mode.tag.startswith("r"):
            n = max(1, mode.messages)
            top = sorted(mode.commands.items(), key=lambda kv: -kv[1])
            print(f"redis commands per message, {mode.title.strip()}: " + ", ".join(f"{k} {v / n:.1f}" for k, v in top))
            if mode.round_trips:
                trips = ", ".join(f"{group} {count / n:.1f}" for group, count in sorted(mode.round_trips.items()))
                print(f"redis round trips per message (as relaybot counts them), {mode.title.strip()}: {trips}")
            break  # the first Redis-bus mode: the others differ only in idle workers' reads

    stray = receiver.errors.get("?", [])
    total_errors += len(stray)
    resends = sum(receiver.resends.values())
    print(f"\nerrors: {total_errors}   callback resends (same Idempotency-Key, not errors): {resends}")
    for mode in modes:
        for error in mode_errors(mode, receiver)[:5]:
            print(f"  {mode.title}: {error}")
    for error in stray[:5]:
        print(f"  (no mode): {error}")
    return total_errors


def log_problems(procs: list[Proc]) -> list[str]:
    found = []
    for p in procs:
        text = p.output(2_000_000)
        errors = len(re.findall(r'"level":\s*"(?:error|critical)"', text)) + text.count("Traceback")
        if errors:
            found.append(f"{p.name} (pid {p.pid}) logged {errors} error(s); see {p.log}")
    return found


# --- main -----------------------------------------------------------------------------------------


async def bench(
    tmp: Path,
    conversations: int,
    messages: int,
    worker_counts: list[int],
    *,
    bare: bool,
    model_delay: float,
    worker_concurrency: int | None,
    profile: Path | None = None,
    log_level: str = "WARNING",
) -> int:
    procs: list[Proc] = []
    redis_server: RedisServer | None = None
    postgres: PostgresServer | None = None
    receiver = Receiver()
    redis_client: aioredis.Redis | None = None
    started = time.perf_counter()
    # SIGINT or SIGTERM cancels the run, so the `finally` below stops every process it started.
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        redis_server = await asyncio.to_thread(start_redis)
        try:
            postgres = await asyncio.to_thread(start_postgres)
            database_url = postgres.url
            history = f"PostgreSQL ({database_url})"
        except Exception as exc:
            database_url = f"sqlite:///{tmp / 'distributed.db'}"
            history = f"SQLite ({database_url}); PostgreSQL did not start: {str(exc).splitlines()[0][:200]}"
        await receiver.start()
        redis_client = aioredis.Redis.from_url(redis_server.url)
        redis_info: Any = await redis_client.info("server")
        print(f"redis-server {redis_info['redis_version']} on {redis_server.url} (pid {redis_info['process_id']})")
        print(f"history of the Redis-bus modes: {history}")
        print("history of the embedded mode: SQLite in a temp dir; sessions in memory")

        bots = bare_bots(tmp / "bots") if bare else bots_with_high_limits(tmp / "bots")
        kind = "bare (no intents, no knowledge)" if bare else "the example bot (intents; knowledge not ingested)"
        print(f"bot: {kind}")
        model_env: dict[str, str] = {}
        if model_delay > 0:
            # The model is the wait: a fake OpenAI server (its own process) that answers each request
            # with its last user message after `model_delay` seconds; the bots' chain is that one model.
            fake_port = free_port()
            fake = spawn(
                "fake OpenAI",
                "fake",
                [
                    sys.executable,
                    "-m",
                    "tests.fakes.openai_server",
                    "--port",
                    str(fake_port),
                    "--first-token-delay",
                    str(model_delay),
                    "--echo",
                ],
                relaybot_env(),
                tmp / "fake-openai.log",
                fake_port,
            )
            procs.append(fake)
            await wait_output(fake, "fake OpenAI on")
            model_env = {"OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": f"http://127.0.0.1:{fake_port}/v1"}
            for toml in bots.glob("*/bot.toml"):
                text = toml.read_text()
                if "[models]" not in text:
                    toml.write_text(text + '\n[models]\nchain = ["openai:gpt-4o-mini"]\n')
            print(f"model: a fake OpenAI answering after {model_delay:g} s (pid {fake.pid})")
        if worker_concurrency is not None:
            model_env["RELAYBOT_WORKER_CONCURRENCY"] = str(worker_concurrency)
        common = relaybot_env(
            **model_env,
            RELAYBOT_BOTS_DIR=str(bots),
            # The replies must quote the message (the correctness check), so `run` does not ingest the
            # example bot's documents in the background; a worker process never ingests at start.
            RELAYBOT_KNOWLEDGE__INGEST_ON_START="false",
            RELAYBOT_SECRET_KEY="bench-secret-key-bench-secret-key",
            RELAYBOT_API__KEYS=json.dumps([API_KEY]),
            RELAYBOT_API__SIGNING_SECRET=SIGNING_SECRET,
            RELAYBOT_API__ALLOW_PRIVATE_CALLBACKS="true",  # the callback receiver is on 127.0.0.1
            RELAYBOT_LOG_LEVEL=log_level,
            RELAYBOT_SHUTDOWN_GRACE_SECONDS="5",
            HF_HUB_OFFLINE="1",
        )
        embedded_env = {**common, "RELAYBOT_DATA_DIR": str(tmp / "data-embedded")}
        distributed_env = {
            **common,
            "RELAYBOT_DATA_DIR": str(tmp / "data-distributed"),
            "RELAYBOT_BUS": "redis",
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": database_url,
        }
        relaybot = [sys.executable, "-m", "core.cli"]
        listen = ["--host", "127.0.0.1", "--port"]
        port = free_port()
        baseline = spawn(
            "baseline",
            "baseline",
            [sys.executable, str(SELF), "--baseline-server", str(port), redis_server.url],
            common,
            tmp / "baseline.log",
            port,
        )
        procs.append(baseline)
        port = free_port()
        embedded = spawn("run", "run", [*relaybot, "run", *listen, str(port)], embedded_env, tmp / "run.log", port)
        procs.append(embedded)
        port = free_port()
        serve = spawn(
            "serve api",
            "serve",
            [*relaybot, "serve", "api", *listen, str(port)],
            distributed_env,
            tmp / "serve.log",
            port,
        )
        procs.append(serve)
        ready = await asyncio.gather(*(wait_http(p) for p in (baseline, embedded, serve)))
        print(
            "up: "
            + ", ".join(
                f"{p.name} pid {p.pid} port {p.port} in {s:.1f} s"
                for p, s in zip((baseline, embedded, serve), ready, strict=True)
            )
        )

        groups: dict[str, list[int]] = {
            "client": [os.getpid()],
            "baseline": [baseline.pid],
            "run": [embedded.pid],
            "serve": [serve.pid],
            "worker": [],
            "redis": [int(redis_info["process_id"])],
            "postgres": [postgres_pid(postgres)] if postgres is not None else [],
        }
        meter = Meter(redis_client, groups)
        profiler = Profiler(profile, groups) if profile is not None else None
        url = {p.kind: f"http://127.0.0.1:{p.port}" for p in (baseline, embedded, serve)}
        meter.metrics["serve"].append(url["serve"])
        measured: list[Mode] = []

        print("measuring (each after an untimed warm-up):", flush=True)
        baseline_a = await measure(
            "baseA", "baseline (first)", url["baseline"], receiver, meter, conversations, messages
        )
        measured.append(
            await measure(
                "emb", "embedded: relaybot run", url["run"], receiver, meter, conversations, messages, profiler
            )
        )
        await asyncio.to_thread(stop_all, [embedded])  # idle from here on; the Redis-bus modes get both cores

        workers: list[Proc] = []
        for count in worker_counts:
            new: list[Proc] = []
            while len(workers) + len(new) < count:
                n = len(workers) + len(new) + 1
                worker_port = free_port()  # for its /metrics (the Redis round trips it counts)
                new.append(
                    spawn(
                        f"worker {n}",
                        "worker",
                        [*relaybot, "worker", *listen, str(worker_port)],
                        distributed_env,
                        tmp / f"worker{n}.log",
                        worker_port,
                    )
                )
                meter.metrics["worker"].append(f"http://127.0.0.1:{worker_port}")
            procs.extend(new)
            await asyncio.gather(*(wait_output(w, "relaybot worker is running") for w in new))
            workers.extend(new)
            groups["worker"] = [w.pid for w in workers]
            title = f"redis bus: serve + {count} worker{'s' if count > 1 else ''}"
            measured.append(
                await measure(f"r{count}", title, url["serve"], receiver, meter, conversations, messages, profiler)
            )
            print(f"    worker pids: {', '.join(str(w.pid) for w in workers)}; serve pid {serve.pid}", flush=True)

        baseline_b = await measure(
            "baseB", "baseline (last)", url["baseline"], receiver, meter, conversations, messages
        )
        await asyncio.sleep(SETTLE_SECONDS)  # a duplicate, if there were one, has time to arrive

        best = baseline_a if Figures.of(baseline_a.run).rate >= Figures.of(baseline_b.run).rate else baseline_b
        best.title = "baseline: aiohttp + redis"
        other = baseline_b if best is baseline_a else baseline_a
        best.warm_errors += mode_errors(other, receiver)
        errors = report([best, *measured], best, receiver, conversations, messages)
        print(f"history of the Redis-bus modes: {history.split(' (')[0]}; of the embedded mode: SQLite")

        died = [p for p in procs if p is not embedded and p.proc.poll() is not None]
        for p in died:
            print(f"{p.name} (pid {p.pid}) died during the run:\n{p.output()}")
        problems = log_problems(procs)
        for problem in problems:
            print(problem)
        print(f"whole run: {time.perf_counter() - started:.0f} s")
        return 1 if errors or died else 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # cleaning up: further signals must not cut it short
            loop.add_signal_handler(sig, lambda: None)
        try:
            # In a thread: the receiver keeps answering, so replies in flight do not hold up a shutdown.
            await asyncio.to_thread(stop_all, procs)
        finally:
            stop_all(procs)  # a no-op unless the line above was interrupted
            if redis_client is not None:
                await redis_client.aclose()
            await receiver.stop()
            if postgres is not None:
                postgres.stop()
            if redis_server is not None:
                redis_server.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def postgres_pid(server: PostgresServer) -> int:
    proc = getattr(server, "_proc", None)
    return int(proc.pid) if proc is not None else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=50, help="concurrent conversations (default 50)")
    parser.add_argument("--messages", type=int, default=10, help="messages per conversation (default 10)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure, rising (default 1,2,4)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (process logs, bots copy)")
    add_log_level_option(parser)
    parser.add_argument("--bare", action="store_true", help="a bot with no intents and no knowledge (framework cost)")
    parser.add_argument(
        "--model-delay",
        type=float,
        default=0.0,
        help="seconds a fake OpenAI model takes to answer (default 0: the offline provider)",
    )
    parser.add_argument(
        "--worker-concurrency", type=int, help="RELAYBOT_WORKER_CONCURRENCY of every relaybot process (default 16)"
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy the relaybot processes of each measured run into DIR"
    )
    parser.add_argument("--baseline-server", nargs=2, metavar=("PORT", "REDIS_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline_server(int(args.baseline_server[0]), args.baseline_server[1])
        return 0
    if args.conversations < 1 or args.messages < 1:
        parser.error("--conversations and --messages must be at least 1")
    try:
        worker_counts = sorted({int(n) for n in args.workers.split(",") if n.strip()})
    except ValueError:
        parser.error("--workers takes a comma-separated list of numbers, e.g. 1,2,4")
    if not worker_counts or worker_counts[0] < 1:
        parser.error("--workers needs at least one count of 1 or more")
    tmp = Path(tempfile.mkdtemp(prefix="relaybot-bench-dist-"))
    try:
        return asyncio.run(
            bench(
                tmp,
                args.conversations,
                args.messages,
                worker_counts,
                bare=args.bare,
                model_delay=args.model_delay,
                worker_concurrency=args.worker_concurrency,
                log_level=args.log_level,
                profile=args.profile,
            )
        )
    except RuntimeError as exc:  # a server that did not start (its log tail is in the message)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted; every process this run started has been stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
