"""Runs tool calls: arguments checked against the schema, a timeout, one log event per call.

Nothing a tool does can fail the turn: an unknown tool, bad arguments, a ToolError, any other
exception and a timeout each become a ToolResult with its outcome, which the handler (or the model)
turns into a graceful answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog

from core.tools.base import ToolContext, ToolError, ToolResult, WithButtons
from core.tools.registry import ToolRegistry

__all__ = ["ToolExecutor"]


class ToolExecutor:
    """One per process. Owns the HTTP session tools share (opened on first use, inside the loop)."""

    def __init__(
        self,
        *,
        timeout_seconds: float = 10.0,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._timeout = timeout_seconds
        self._log = logger or structlog.get_logger("relaybot.tools")
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def call(
        self,
        registry: ToolRegistry,
        name: str,
        arguments: Mapping[str, Any],
        *,
        context: ToolContext,
        timeout_seconds: float | None = None,
        caller: str = "handler",
    ) -> ToolResult:
        started = time.monotonic()
        result = await self._run(registry, name, arguments, context, timeout_seconds or self._timeout)
        result = dataclasses.replace(result, latency_ms=(time.monotonic() - started) * 1000, arguments=dict(arguments))
        log = self._log.ainfo if result.ok else self._log.awarning
        await log(
            "tool_call",
            bot=context.bot,
            session_id=context.session_id,
            caller=caller,
            **result.to_log(),
        )
        return result

    async def _run(
        self, registry: ToolRegistry, name: str, arguments: Mapping[str, Any], context: ToolContext, limit: float
    ) -> ToolResult:
        tool = registry.get(name)
        if tool is None:
            known = ", ".join(t.name for t in registry) or "none"
            return ToolResult(name=name, outcome="unknown_tool", error=f"no tool named {name!r} (tools: {known})")
        problems = registry.problems(name, arguments)
        if problems:
            return ToolResult(name=name, outcome="invalid_arguments", error="; ".join(problems))
        try:
            async with asyncio.timeout(limit):
                output = await tool.function(context, **arguments)
        except TimeoutError:
            return ToolResult(name=name, outcome="timeout", error=f"{name} did not finish within {limit:g} s")
        except ToolError as exc:
            return ToolResult(name=name, outcome="error", error=str(exc))
        except Exception as exc:
            await self._log.aexception("tool_crashed", tool=name, bot=context.bot)
            return ToolResult(name=name, outcome="error", error=f"{name} failed ({type(exc).__name__})")
        if isinstance(output, WithButtons):
            return ToolResult(name=name, outcome="ok", output=output.output, buttons=output.buttons, card=output.card)
        return ToolResult(name=name, outcome="ok", output=output)
