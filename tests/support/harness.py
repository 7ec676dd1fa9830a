"""Builds a real relaybot process-in-a-test: settings in a temp dir, the real app on a free port."""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from core.runtime import Runtime
from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings isolated from the developer's environment: temp data dir, no Redis unless given."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "bots_dir": REPO / "bots",
        "redis_url": None,
        "database_url": None,
        "openai_api_key": None,
        "anthropic_api_key": None,
        "secret_key": "test-secret-key-of-enough-length",
    }
    values.update(overrides)
    return Settings(**values)


def write_bot(bots_dir: Path, name: str = "support", **sections: dict[str, Any]) -> Path:
    """Copy the example bot into `bots_dir`, overriding bot.toml sections (e.g. limits={...})."""
    target = bots_dir / name
    shutil.copytree(REPO / "bots" / "support", target, dirs_exist_ok=True)
    data = tomllib.loads((target / "bot.toml").read_text())
    data["name"] = name
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    (target / "bot.toml").write_text(_to_toml(data))
    return target


def _to_toml(data: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def key(k: str) -> str:
        return k if k.replace("_", "").replace("-", "").isalnum() else value(k)

    def table(prefix: str, values: dict[str, Any]) -> list[str]:
        # Nested tables ([intents.billing], [tools.settings]) follow their parent's plain keys.
        plain = "\n".join(f"{key(k)} = {value(v)}" for k, v in values.items() if not isinstance(v, dict))
        out = [f"[{prefix}]\n{plain}"] if prefix else [plain]
        for k, v in values.items():
            if isinstance(v, dict):
                out += table(f"{prefix}.{key(k)}" if prefix else key(k), v)
        return out

    return "\n\n".join(table("", data)) + "\n"


@asynccontextmanager
async def running_app(settings: Settings, runtime: Runtime | None = None) -> AsyncIterator[tuple[Runtime, str]]:
    """The real aiohttp app with every configured channel and a worker; yields (runtime, base URL)."""
    runtime = runtime or await Runtime.from_settings(settings)
    if not runtime.channels:
        runtime.add_configured_channels()
    runner = web.AppRunner(runtime.build_app())
    try:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        await runtime.start()
        yield runtime, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await runtime.close()
