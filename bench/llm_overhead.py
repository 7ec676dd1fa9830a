"""What the LLM layer costs: the chain over a bare SDK call, and first token through the pipeline.

Starts the fake OpenAI server (tests/fakes/openai_server.py) in its own process and measures,
in this process, against that same server:

1. bare     `AsyncOpenAI.chat.completions.create(stream=True, stream_options=include_usage)`,
            read to the end: the floor.
2. chain    the same request through `Chain.run` as `ChainFactory` builds it for the support bot
            (breaker check and record, deadlines, usage, attempt records; no cache).
3. pipeline a message published on the bus of a real `Runtime` until the first streamed fragment
            (and the final reply) reaches a streaming channel: rate limit, session, history
            window, context, the chain, then outbox and channel.

Bare and chain runs are interleaved so drift hits both alike. Prints p50/p99 for each, the
chain/bare ratios and the time to first token through the pipeline next to the fake's own (as the
bare SDK sees it). Never fails on timing; exits 1 only if the fake does not start or answers wrong.

    python bench/llm_overhead.py [--requests 300] [--first-token-delay 0] [--token-delay 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import openai
from aiohttp import web
from benchkit import REPO, percentile, stop_process, wait_for_port
from openai.types.chat import ChatCompletionSystemMessageParam, ChatCompletionUserMessageParam

from core.bots import BotRegistry
from core.channel import Capabilities, DeliveryResult
from core.envelope import Envelope, Reply
from core.llm.base import ChatMessage, LLMRequest
from core.llm.factory import ChainFactory
from core.logging import configure_logging
from core.runtime import Runtime
from core.settings import Settings
from tests.support.servers import free_port

WARMUP = 30
EXPECTED = "Hello from the fake provider."


@dataclass
class Series:
    total_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)


# --- the fake, in its own process -----------------------------------------------------------------


async def start_fake(port: int, first_token_delay: float, token_delay: float) -> asyncio.subprocess.Process:
    argv = ["-m", "tests.fakes.openai_server", "--port", str(port)]
    argv += ["--first-token-delay", str(first_token_delay), "--token-delay", str(token_delay)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    await wait_for_port(proc, port, "fake OpenAI server", within=30)
    return proc


# --- 1 and 2: bare SDK vs chain -------------------------------------------------------------------


def request(i: int) -> LLMRequest:
    return LLMRequest(
        messages=(
            ChatMessage("system", "You are the support assistant for Tasklane."),
            ChatMessage("user", f"Question {i}: how do I export my tasks to CSV?"),
        )
    )


async def bare_once(client: openai.AsyncOpenAI, req: LLMRequest, into: Series) -> str:
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=[
            ChatCompletionSystemMessageParam(role="system", content=req.messages[0].content),
            ChatCompletionUserMessageParam(role="user", content=req.messages[1].content),
        ],
        temperature=req.temperature,
        max_completion_tokens=req.max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    async with stream:
        async for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    if first is None:
                        first = time.perf_counter()
                    parts.append(choice.delta.content)
    into.total_ms.append((time.perf_counter() - started) * 1000)
    into.ttft_ms.append(((first or time.perf_counter()) - started) * 1000)
    return "".join(parts)


async def chain_once(factory: ChainFactory, bots: BotRegistry, req: LLMRequest, into: Series) -> str:
    first: float | None = None

    async def on_delta(text: str) -> None:
        nonlocal first
        if first is None:
            first = time.perf_counter()

    started = time.perf_counter()
    result = await factory.for_bot(bots.require("support")).run(req, on_delta=on_delta, user_key="bench")
    into.total_ms.append((time.perf_counter() - started) * 1000)
    into.ttft_ms.append(((first or time.perf_counter()) - started) * 1000)
    if result.outcome != "answered" or result.fallback_used:
        raise RuntimeError(f"the chain did not answer from its first step: {result}")
    return result.text


# --- 3: through the pipeline ----------------------------------------------------------------------


class StreamingChannel:
    """A channel that shows streamed fragments; records when the first one and the reply arrive."""

    channel_names: tuple[str, ...] = ("api",)
    capabilities = Capabilities(max_message_length=100_000, can_stream=True)

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.done: dict[str, asyncio.Future[tuple[float, str]]] = {}

    def register(self, app: web.Application) -> None:
        """No routes: the benchmark publishes on the bus itself."""

    async def deliver(self, reply: Reply) -> DeliveryResult:
        key = reply.in_reply_to or ""
        if not reply.final:
            self.first.setdefault(key, time.perf_counter())
        else:
            waiter = self.done.get(key)
            if waiter is not None and not waiter.done():
                waiter.set_result((time.perf_counter(), reply.text))
        return DeliveryResult(delivered=True)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        """Nothing to release."""


async def build_runtime(settings: Settings) -> Runtime:
    return await Runtime.from_settings(settings)


async def pipeline_runs(runtime: Runtime, channel: StreamingChannel, n: int, into: Series, tag: str) -> None:
    loop = asyncio.get_running_loop()
    for i in range(n):
        # One conversation per message: the figures are about the LLM path, not a growing history
        # or one user's rate limit.
        envelope = Envelope.create(
            bot="support",
            channel="api",
            channel_message_id=f"{tag}-{i}",
            conversation_id=f"{tag}-{i}",
            user_id=f"api:{tag}-{i}",
            text=f"Question {i}: how do I export my tasks to CSV?",
        )
        waiter: asyncio.Future[tuple[float, str]] = loop.create_future()
        channel.done[envelope.channel_message_id] = waiter
        started = time.perf_counter()
        await runtime.bus.publish(envelope)
        finished, text = await asyncio.wait_for(waiter, 30)
        if text != EXPECTED:
            raise RuntimeError(f"the pipeline answered {text!r}")
        into.total_ms.append((finished - started) * 1000)
        into.ttft_ms.append((channel.first.get(envelope.channel_message_id, finished) - started) * 1000)


# --- report ---------------------------------------------------------------------------------------


def line(name: str, values: list[float]) -> str:
    return f"  {name:<26} p50 {percentile(values, 50):8.2f} ms   p99 {percentile(values, 99):8.2f} ms"


def ratio(a: list[float], b: list[float], q: float) -> str:
    base = percentile(b, q)
    return f"{percentile(a, q) / base:.2f}x" if base > 0 else "n/a"


def report(n: int, bare: Series, chain: Series, pipe: Series) -> None:
    print()
    print(f"LLM layer overhead: {n} requests each, streamed, against the fake OpenAI server")
    print("whole answer (request → last chunk)")
    print(line("bare SDK", bare.total_ms))
    print(line("chain", chain.total_ms))
    added50 = percentile(chain.total_ms, 50) - percentile(bare.total_ms, 50)
    added99 = percentile(chain.total_ms, 99) - percentile(bare.total_ms, 99)
    print(
        f"  {'chain / bare':<26} p50 {ratio(chain.total_ms, bare.total_ms, 50):>8}      "
        f"p99 {ratio(chain.total_ms, bare.total_ms, 99):>8}   (added: p50 {added50:+.2f} ms, p99 {added99:+.2f} ms)"
    )
    print("time to first token")
    print(line("fake, as the bare SDK sees", bare.ttft_ms))
    print(line("chain", chain.ttft_ms))
    print(line("pipeline (bus → channel)", pipe.ttft_ms))
    print(
        f"  {'pipeline / fake':<26} p50 {ratio(pipe.ttft_ms, bare.ttft_ms, 50):>8}      "
        f"p99 {ratio(pipe.ttft_ms, bare.ttft_ms, 99):>8}"
    )
    print("whole reply through the pipeline (bus → final reply at the channel)")
    print(line("pipeline", pipe.total_ms))


async def bench(n: int, first_token_delay: float, token_delay: float) -> int:
    port = free_port()
    fake = await start_fake(port, first_token_delay, token_delay)
    tmp = Path(tempfile.mkdtemp(prefix="relaybot-bench-llm-"))
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        settings = Settings(
            data_dir=tmp / "data",
            bots_dir=REPO / "bots",
            redis_url=None,
            database_url=None,
            openai_api_key="sk-bench",
            openai_base_url=base_url,
            anthropic_api_key=None,
            secret_key="bench-secret-key-of-enough-length",
        )
        bots = BotRegistry.from_dir(settings.bots_dir, default="support")
        bare_client = openai.AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0)
        factory = ChainFactory(settings)
        bare, chain = Series(), Series()
        try:
            for i in range(WARMUP):
                await bare_once(bare_client, request(i), Series())
                await chain_once(factory, bots, request(i), Series())
            for i in range(n):
                # Alternate which goes first, so neither always runs on a just-warmed connection.
                if i % 2:
                    text_a = await bare_once(bare_client, request(i), bare)
                    text_b = await chain_once(factory, bots, request(i), chain)
                else:
                    text_b = await chain_once(factory, bots, request(i), chain)
                    text_a = await bare_once(bare_client, request(i), bare)
                if text_a != EXPECTED or text_b != EXPECTED:
                    print(f"unexpected answers: {text_a!r} / {text_b!r}")
                    return 1
        finally:
            await bare_client.close()
            await factory.aclose()

        pipe = Series()
        pipeline_factory = ChainFactory(settings)
        runtime = await build_runtime(settings)
        channel = StreamingChannel()
        runtime.add_channel(channel)
        await runtime.start()
        try:
            await pipeline_runs(runtime, channel, WARMUP, Series(), "warm")
            await pipeline_runs(runtime, channel, n, pipe, "run")
        finally:
            await runtime.close()
            await pipeline_factory.aclose()
        report(n, bare, chain, pipe)
        return 0
    finally:
        await stop_process(fake)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per series (default 300)")
    parser.add_argument("--first-token-delay", type=float, default=0.0, help="the fake's seconds to first word")
    parser.add_argument("--token-delay", type=float, default=0.0, help="the fake's seconds between words")
    args = parser.parse_args()
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # One `turn` event per message would drown the figures; the anthropic step without a key warns.
    configure_logging("console", "ERROR")
    return asyncio.run(bench(args.requests, args.first_token_delay, args.token_delay))


if __name__ == "__main__":
    sys.exit(main())
