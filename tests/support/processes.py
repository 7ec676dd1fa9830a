"""Real relaybot processes for the tests of the production topology: started, watched, stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.harness import REPO


class RelaybotProcess:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "core.cli", *args],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_http(self, url: str, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relaybot {' '.join(self.args)} exited:\n{self.output()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"relaybot {' '.join(self.args)} never answered {url}:\n{self.output()}")

    def wait_output(self, text: str, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"relaybot {' '.join(self.args)} exited:\n{self.output()}")
            time.sleep(0.1)
        raise RuntimeError(f"relaybot {' '.join(self.args)} never printed {text!r}:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as when a machine dies."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, within: float = 30.0) -> int:
        """SIGTERM, as a platform does on deploy; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(within)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.proc.returncode


def relaybot_env(**values: str) -> dict[str, str]:
    """The test process's environment minus anything that could point relaybot elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RELAYBOT_")
        and k not in ("REDIS_URL", "DATABASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")
    }
    env.update({"HF_HUB_OFFLINE": "1", "RELAYBOT_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"})
    env.update(values)
    return env
