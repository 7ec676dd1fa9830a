"""A package adds a channel without touching core: tests/data/relaybot_echo_channel, installed apart.

The package is built into a wheel, installed with pip into a temporary directory (never into the
test environment) and put on the PYTHONPATH of real relaybot processes, which find it through its entry points: its
envelope channel name ("echo") is registered by loading it, a message goes in through its route,
and the bot's reply comes out through its `deliver`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import REPO
from tests.support.processes import RelaybotProcess, relaybot_env
from tests.support.servers import free_port

PACKAGE = REPO / "tests" / "data" / "relaybot_echo_channel"


def build_wheel(package: Path, out: Path) -> Path:
    """The package as a wheel, from its pyproject (name, version, entry points) and its module files.

    Built here rather than by a build backend: the test environment need not have one (a venv of
    Python 3.12 has no setuptools), and building must not reach the network.
    """
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    name, version = project["name"].replace("-", "_"), project["version"]
    info = f"{name}-{version}.dist-info"
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in eps.items()) + "\n"
        for group, eps in project["entry-points"].items()
    )
    files = {str(path.relative_to(package)): path.read_bytes() for path in sorted((package / name).rglob("*.py"))}
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/entry_points.txt"] = entry_points.encode()
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    wheel = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


@pytest.fixture(scope="module")
def echo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The echo channel installed by pip into a directory of its own (never into the test environment)."""
    root = tmp_path_factory.mktemp("echo")
    wheel = build_wheel(PACKAGE, root)
    site = root / "site"
    offline = ["--no-deps", "--no-index", "--disable-pip-version-check"]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", *offline, "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
    )
    assert (site / "relaybot_echo_channel" / "__init__.py").is_file()
    return site


def _env(site: Path, tmp_path: Path, **values: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return relaybot_env(
        PYTHONPATH=path,
        RELAYBOT_DATA_DIR=str(tmp_path / "data"),
        RELAYBOT_KNOWLEDGE__INGEST_ON_START="false",
        **values,
    )


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def _talk(base: str, user: str, text: str) -> list[str]:
    """Send one message through the echo channel; the replies it delivered to `user` (waits for one)."""
    status, accepted = _http("POST", f"{base}/echo/messages", {"user": user, "text": text})
    assert status == 202 and accepted["envelope_id"]
    deadline = time.monotonic() + 60
    replies: list[str] = []
    while not replies and time.monotonic() < deadline:
        time.sleep(0.2)
        replies = _http("GET", f"{base}/echo/replies?user={user}")[1]["replies"]
    return replies


def _turn_channels(*processes: RelaybotProcess) -> list[str]:
    lines = [line for proc in processes for line in proc.log.read_text().splitlines() if line.startswith("{")]
    return [event["channel"] for event in map(json.loads, lines) if event.get("event") == "turn"]


def test_a_channel_from_another_package_takes_a_message_in_and_delivers_the_reply(
    echo_site: Path, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = RelaybotProcess(["run", "--port", str(port)], _env(echo_site, tmp_path), tmp_path / "run.log")
    try:
        server.wait_http(f"{base}/healthz")
        replies = _talk(base, "ada", "How do I reset my password?")
        assert len(replies) == 1 and replies[0].strip(), server.output()
        assert _http("GET", f"{base}/echo/replies?user=grace")[1] == {"replies": []}
    finally:
        assert server.terminate() == 0, server.output()
    # The turn went through the core like any other, under the channel's own name.
    assert _turn_channels(server) == ["echo"]


@pytest.mark.distributed
def test_a_worker_that_hosts_no_adapter_answers_the_third_party_channel(
    echo_site: Path, tmp_path: Path, redis_url: str
) -> None:
    # The worker reads envelopes of "echo" off the bus and knows the channel only through its entry point.
    env = _env(echo_site, tmp_path, RELAYBOT_BUS="redis", REDIS_URL=redis_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    adapter = RelaybotProcess(["serve", "echo", "--port", str(port)], env, tmp_path / "serve.log")
    worker = RelaybotProcess(["worker"], env, tmp_path / "worker.log")
    try:
        adapter.wait_http(f"{base}/healthz")
        replies = _talk(base, "ada", "How do I reset my password?")
        assert len(replies) == 1 and replies[0].strip(), adapter.output() + worker.output()
    finally:
        assert worker.terminate() == 0, worker.output()
        assert adapter.terminate() == 0, adapter.output()
    assert _turn_channels(adapter, worker) == ["echo"]


def test_a_channel_from_another_package_adds_its_command(echo_site: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "core.cli", "echo", "hello", "there"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(echo_site, tmp_path),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "echo: hello there"
