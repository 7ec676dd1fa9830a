"""The bot's tools offered to the model by function calling (`[tools] llm = [...]`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.handlers.loader import HandlerCatalog
from core.handlers.stage import tool_context
from core.llm.base import ToolCall, ToolSpec
from core.llm.chain import ToolRunner
from core.pipeline.turn import Turn
from core.tools.executor import ToolExecutor
from core.tools.registry import ToolRegistry

__all__ = ["LLMToolBinding", "LLMTools"]

_NO_TOOLS = ToolRegistry()


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMToolBinding:
    specs: tuple[ToolSpec, ...]
    run: ToolRunner
    max_rounds: int


class LLMTools:
    """For the generate stage: the turn's tool declarations and a runner that logs on the turn."""

    def __init__(self, catalog: HandlerCatalog, executor: ToolExecutor, *, data_dir: Path) -> None:
        self._catalog = catalog
        self._executor = executor
        self._data_dir = data_dir

    def for_turn(self, turn: Turn) -> LLMToolBinding | None:
        config = turn.bot.tools
        if not config.llm:
            return None
        handlers = self._catalog.for_bot(turn.bot)
        specs = handlers.tools.specs(config.llm)
        context = tool_context(turn, self._executor, self._data_dir, caller="model")
        offered = set(config.llm)

        async def run(call: ToolCall) -> str:
            # Only what the bot offers: a model naming another declared tool gets "unknown tool".
            registry = handlers.tools if call.name in offered else _NO_TOOLS
            result = await self._executor.call(
                registry,
                call.name,
                call.arguments,
                context=context,
                timeout_seconds=config.timeout_seconds,
                caller="llm",
            )
            turn.tool_calls.append(result.to_log())
            turn.tool_results.append(result)
            return result.for_model()

        return LLMToolBinding(specs=specs, run=run, max_rounds=config.max_rounds)
