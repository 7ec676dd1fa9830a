"""What every benchmark shares: the repo on sys.path, percentiles, bots without rate limits.

Servers (redis-server, PostgreSQL) and free ports come from tests/support/servers.py, the same
code the tests use. Import this module first: `python bench/x.py` puts bench/ on sys.path, not
the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

HIGH_LIMIT = 10**6
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: a bot with nothing but the pipeline: no intents, no knowledge, no tools, the offline provider.
#: What the issue's "bare bot" figures measure: the framework's own cost per message.
BARE_BOT_TOML = f"""\
name = "{{name}}"
system_prompt = "You are a test bot."
[limits]
messages_per_minute = {HIGH_LIMIT}
messages_per_hour = {HIGH_LIMIT}
tokens_per_day = {HIGH_LIMIT * 1000}
bot_tokens_per_day = {HIGH_LIMIT * 1000}
[knowledge]
enabled = false
"""


def add_log_level_option(parser: argparse.ArgumentParser) -> None:
    """`--log-level`: relaybot's RELAYBOT_LOG_LEVEL in a benchmark (WARNING by default, as every
    figure before it was measured; INFO, a deployment's default, adds the turn line)."""
    parser.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="relaybot's RELAYBOT_LOG_LEVEL (default WARNING; INFO, the default of a deployment, adds the turn line)",
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def bots_with_high_limits(target: Path) -> Path:
    """A copy of bots/ whose [limits] are far above what a benchmark sends."""
    shutil.copytree(REPO / "bots", target)
    for toml in sorted(target.glob("*/bot.toml")):
        text = toml.read_text()
        for key in ("messages_per_minute", "messages_per_hour", "tokens_per_day", "bot_tokens_per_day"):
            text, count = re.subn(rf"(?m)^(\s*{key}\s*=\s*)\d[\d_]*", rf"\g<1>{HIGH_LIMIT}", text)
            if count == 0:
                if not re.search(r"(?m)^\[limits\]\s*$", text):
                    text += "\n[limits]\n"
                text = re.sub(r"(?m)^\[limits\]\s*$", f"[limits]\n{key} = {HIGH_LIMIT}", text, count=1)
        limits = tomllib.loads(text).get("limits", {})
        if limits.get("messages_per_minute") != HIGH_LIMIT or limits.get("messages_per_hour") != HIGH_LIMIT:
            raise SystemExit(f"could not raise [limits] in {toml}")
        toml.write_text(text)
    return target


def bare_bots(target: Path, name: str = "support") -> Path:
    """A bots/ folder holding one bare bot called `name`."""
    (target / name).mkdir(parents=True)
    (target / name / "bot.toml").write_text(BARE_BOT_TOML.format(name=name))
    return target


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """CPU time of a live process (0 if it is gone), plus that of its reaped children if asked.

    From the scheduler's nanosecond counters of its threads (/proc/PID/task/*/schedstat) when it
    has no reaped children to count: /proc/PID/stat counts in 10 ms ticks, too coarse for a bare
    echo server that spends a few tens of milliseconds on a whole run. Threads that exited during
    the run are not counted that way; long-lived servers keep theirs.
    """
    if not reaped_children:
        try:
            return sum(int(stat.read_text().split()[0]) for stat in Path(f"/proc/{pid}/task").glob("*/schedstat")) / 1e9
        except (OSError, ValueError, IndexError):
            pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


@dataclass(frozen=True)
class ThreadTimes:
    """Seconds a process's threads spent on a CPU, and runnable but waiting for one (the scheduler's
    run-queue wait): the second is time a thread was ready to work and could not."""

    running: float = 0.0
    waiting: float = 0.0

    def __sub__(self, other: ThreadTimes) -> ThreadTimes:
        return ThreadTimes(self.running - other.running, self.waiting - other.waiting)


def thread_times(pid: int) -> tuple[ThreadTimes, ThreadTimes]:
    """(the main thread, every other thread together) of a live process, from
    /proc/PID/task/*/schedstat; zeros if it is gone. In relaybot the main thread runs the event loop;
    the others are the SQLite history's thread and the log writer."""
    main = others = ThreadTimes()
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            running, waiting = (int(v) / 1e9 for v in stat.read_text().split()[:2])
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
        if stat.parent.name == str(pid):
            main = ThreadTimes(running, waiting)
        else:
            others = ThreadTimes(others.running + running, others.waiting + waiting)
    return main, others


async def wait_for_port(proc: asyncio.subprocess.Process, port: int, name: str, within: float = 60.0) -> None:
    """Return once `proc` accepts connections on `port`; stop it and raise if it exits or never does."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"the {name} exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.05)
    await stop_process(proc)
    raise RuntimeError(f"the {name} did not start within {within:.0f} s")


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """Stop one process by its PID: SIGTERM, then SIGKILL after 10 s."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


#: how long a server a benchmark starts may take to answer GET /healthz
STARTUP_TIMEOUT = 60.0


@dataclass
class Server:
    """A server process a benchmark started, with its log (stdout and stderr)."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    def tail(self, lines: int = 30) -> str:
        self.log.flush()
        self.log.seek(0)
        return "\n".join(self.log.read().decode(errors="replace").splitlines()[-lines:])


def start_server(name: str, argv: list[str], port: int, env: dict[str, str], log: IO[bytes]) -> Server:
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Server(name, proc, port, log)


def stop_server(server: Server) -> None:
    """SIGTERM to the server's PID, SIGKILL after 15 s."""
    if server.proc.poll() is not None:
        return
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=5)


async def wait_healthy(server: Server) -> float:
    """Seconds until GET /healthz answers 200; raises if the process dies or STARTUP_TIMEOUT passes."""
    url = f"http://127.0.0.1:{server.port}/healthz"
    started = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        while time.perf_counter() < started + STARTUP_TIMEOUT:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{server.name} did not answer {url} within {STARTUP_TIMEOUT:.0f} s:\n{server.tail()}")
