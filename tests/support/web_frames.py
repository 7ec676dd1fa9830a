"""The widget's WebSocket frames, shared by the web channel tests and the route fuzzing."""

from __future__ import annotations

from typing import Any

import aiohttp


async def frames_until_reply(ws: aiohttp.ClientWebSocketResponse, within: float = 5.0) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while True:
        frame = await ws.receive_json(timeout=within)
        frames.append(frame)
        if frame["type"] in ("reply", "error"):
            return frames
