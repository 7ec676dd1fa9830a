"""Throughput of signed Slack events through the Slack adapter, against a bare signature check.

Two servers, each in its own process (this script with `--server MODE PORT API_URL`), driven one after
the other by the same closed-loop client in this process:

- **relaybot**: the real app (`Runtime` with only the Slack channel, embedded bus, no worker, so the
  figure is the adapter's: size check, signature check, Bolt's `AsyncApp` dispatch and
  middleware, normalization, the cached `users.info` name, the atomic publish on the bus, the ack);
- **baseline**: a bare aiohttp handler that reads the body, checks the signature with the same
  `slack_sdk.signature.SignatureVerifier`, parses the JSON and answers 200. It runs first and last;
  the better run is the baseline.

The fake Slack Web API (tests/fakes/slack_api.py) runs in this process; relaybot calls it only for
`auth.test` and one `users.info`. Every event is a distinct DM, signed just before it is sent. After
the run, every event is sent again with `X-Slack-Retry-Num: 1`: the bus must still hold exactly one
envelope per event (duplicates are acked, not published). Prints events/s, p50/p99 ack latency and
the relaybot/baseline ratios. Exits 1 only when something went wrong (a non-200 ack, a lost or
duplicated envelope), never because it was slow.

    python bench/slack_events.py [--events 3000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from benchkit import REPO, bots_with_high_limits, percentile, stop_process, wait_for_port
from slack_sdk.signature import SignatureVerifier

from tests.fakes.slack_api import BOT_USER_ID, TOKEN, FakeSlack, user
from tests.support.servers import free_port

SECRET = "bench-signing-secret"
WARMUP = 100


@dataclass
class Run:
    name: str
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0


def event_body(i: int, prefix: str) -> bytes:
    ts = f"1700000000.{i:06d}"
    return json.dumps(
        {
            "token": "legacy",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": f"Ev{prefix}{i}",
            "event_time": 1700000000,
            "event": {
                "type": "message",
                "channel": f"D{prefix}{i % 50}",
                "channel_type": "im",
                "user": "U1",
                "text": f"benchmark message {i}",
                "ts": ts,
            },
            "authorizations": [{"team_id": "T1", "user_id": BOT_USER_ID, "is_bot": True}],
        }
    ).encode()


def headers_for(body: bytes, retry: bool = False) -> dict[str, str]:
    ts = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body) or ""
    headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature, "Content-Type": "application/json"}
    if retry:
        headers |= {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    return headers


# --- the servers (each in its own process) ------------------------------------------------------------------


async def serve_relaybot(port: int, api_url: str, data_dir: Path) -> None:
    from core.logging import configure_logging
    from core.runtime import Runtime
    from core.settings import Settings

    configure_logging("console", "WARNING")
    settings = Settings(
        data_dir=data_dir,
        bots_dir=bots_with_high_limits(data_dir / "bots"),
        redis_url=None,
        database_url=None,
        openai_api_key=None,
        anthropic_api_key=None,
        secret_key="bench-secret-key-of-enough-length",
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=api_url,
    )
    runtime = await Runtime.from_settings(settings)
    runtime.add_configured_channels(["slack"])
    app = runtime.build_app()

    async def pending(request: web.Request) -> web.Response:
        return web.json_response({"pending": await runtime.bus.pending()})

    app.router.add_get("/bench/pending", pending)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await runtime.start(worker=False)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await runtime.close(grace=0)


async def serve_baseline(port: int) -> None:
    verifier = SignatureVerifier(SECRET)

    async def events(request: web.Request) -> web.Response:
        raw = await request.read()
        if not verifier.is_valid(
            raw, request.headers.get("X-Slack-Request-Timestamp"), request.headers.get("X-Slack-Signature")
        ):
            return web.Response(status=401)
        json.loads(raw)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/slack/events", events)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# --- the client ----------------------------------------------------------------------------------------------


SCRIPT = str(Path(__file__).resolve())


async def start_server(mode: str, port: int, api_url: str, data_dir: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for name in ("REDIS_URL", "DATABASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        env.pop(name, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        "--server",
        mode,
        str(port),
        api_url,
        str(data_dir),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    await wait_for_port(proc, port, f"{mode} server")
    return proc


async def drive(url: str, name: str, events: int, concurrency: int, prefix: str, *, retry: bool = False) -> Run:
    run = Run(name)
    bodies = [event_body(i, prefix) for i in range(events)]
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(body: bytes, record: bool) -> None:
            started = time.perf_counter()
            async with http.post(url, data=body, headers=headers_for(body, retry)) as response:
                await response.read()
                if response.status != 200:
                    run.errors += 1
            if record:
                run.latencies_ms.append((time.perf_counter() - started) * 1000)

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(bodies):
                body = bodies[next_index]
                next_index += 1
                await one(body, True)

        for i in range(min(WARMUP, events)):  # warm connections, Bolt's auth.test, the name cache
            await one(event_body(i, "warm" + prefix), False)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.seconds = time.perf_counter() - started
    return run


def show(run: Run) -> str:
    p50, p99 = percentile(run.latencies_ms, 50), percentile(run.latencies_ms, 99)
    return f"{run.name:<12} {run.rate:9.0f} events/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   errors {run.errors}"


async def bench(events: int, concurrency: int) -> int:
    failed = False
    async with FakeSlack(users={"U1": user("Bench")}) as slack:
        with tempfile.TemporaryDirectory(prefix="relaybot-bench-slack-") as tmp:
            runs: dict[str, list[Run]] = {"baseline": [], "relaybot": []}
            for round_, mode in enumerate(("baseline", "relaybot", "baseline")):
                port = free_port()
                proc = await start_server(mode, port, slack.api_url, Path(tmp) / f"run{round_}")
                try:
                    url = f"http://127.0.0.1:{port}/slack/events"
                    run = await drive(url, mode, events, concurrency, prefix=str(round_))
                    runs[mode].append(run)
                    print(show(run), flush=True)
                    failed |= run.errors > 0
                    if mode == "relaybot":
                        again = await drive(url, "retries", events, concurrency, prefix=str(round_), retry=True)
                        print(show(again) + "   (every event again, as Slack retries)", flush=True)
                        async with aiohttp.ClientSession() as http:
                            pending_url = f"http://127.0.0.1:{port}/bench/pending"
                            async with http.get(pending_url) as response:
                                pending = (await response.json())["pending"]
                        expected = events + min(WARMUP, events)
                        print(f"envelopes on the bus: {pending} (expected {expected}, one per distinct event)")
                        failed |= pending != expected or again.errors > 0
                finally:
                    await stop_process(proc)
    base = max(runs["baseline"], key=lambda r: r.rate)
    relay = runs["relaybot"][0]
    print(
        f"\nrelaybot / baseline: throughput {relay.rate / base.rate:.2f}x, "
        f"p50 {percentile(relay.latencies_ms, 50) / percentile(base.latencies_ms, 50):.1f}x, "
        f"p99 {percentile(relay.latencies_ms, 99) / percentile(base.latencies_ms, 99):.1f}x "
        f"(baseline: the better of two runs; {events} events, {concurrency} in flight)"
    )
    if failed:
        print("FAILED: see the errors and envelope count above", file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--server", nargs=4, metavar=("MODE", "PORT", "API_URL", "DATA_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server:
        mode, port, api_url, data_dir = args.server
        if mode == "relaybot":
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            asyncio.run(serve_relaybot(int(port), api_url, Path(data_dir)))
        else:
            asyncio.run(serve_baseline(int(port)))
        return 0
    return asyncio.run(bench(args.events, args.concurrency))


if __name__ == "__main__":
    sys.exit(main())
