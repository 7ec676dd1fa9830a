"""The bot's tools offered to the model by function calling (`[tools] llm = [...]`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.actions import MAX_ACTIONS, Button
from core.handlers.loader import HandlerCatalog
from core.handlers.stage import tool_context
from core.llm.base import ToolCall, ToolSpec
from core.llm.chain import ToolRunner
from core.pipeline.turn import Turn
from core.tools.base import ToolResult
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
            entry = result.to_log()
            if result.ok and (result.buttons or result.card is not None):
                dropped = offer_with_answer(turn, result)
                if dropped:
                    entry["buttons_dropped"] = dropped
            turn.tool_calls.append(entry)
            turn.tool_results.append(result)
            return result.for_model()

        return LLMToolBinding(specs=specs, run=run, max_rounds=config.max_rounds)


def offer_with_answer(turn: Turn, result: ToolResult) -> list[str]:
    """Add what a tool the model called offered to the buttons that go with the model's answer.

    After any a handler offered (`turn.offer`), and earlier calls' in call order; an id already offered
    is not added twice, a newer card replaces an older one, and buttons beyond the reply's limit are
    left out: their ids are returned (the turn's log shows them).
    """
    card = result.card if result.card is not None else turn.offer_card
    taken = {b.id for b in card.actions} if card is not None else set()
    room = MAX_ACTIONS - len(taken)
    kept: list[Button] = []
    dropped: list[str] = []
    for button in (*turn.offer_actions, *result.buttons):
        if button.id in taken:
            continue  # offered already (or on the card)
        if len(kept) >= room:
            dropped.append(button.id)
            continue
        kept.append(button)
        taken.add(button.id)
    turn.offer_actions, turn.offer_card = tuple(kept), card
    return dropped
