"""The pipeline stage that runs an intent's handler (after retrieval, before the context is assembled)."""

from __future__ import annotations

from pathlib import Path

import structlog

from core.handlers.context import HandlerTurn
from core.handlers.loader import HandlerCatalog
from core.intents.base import ACTIVE_FLOW_FIELD
from core.pipeline.turn import AskCause, Turn
from core.stores.base import SessionStore
from core.tools.base import ToolContext
from core.tools.executor import ToolExecutor

__all__ = ["HandlerStage", "tool_context"]


def tool_context(turn: Turn, tools: ToolExecutor, data_dir: Path, *, caller: AskCause = "tool") -> ToolContext:
    """What a tool run in this turn is given; `caller` says who asks for a person if the tool does
    ("tool" when a handler called it, "model" through function calling)."""
    env = turn.envelope

    def ask_for_person(reason: str) -> None:
        turn.ask_for_person(caller, reason)

    return ToolContext(
        bot=turn.bot.name,
        session_id=env.session_id,
        user_id=env.user_id,
        channel=env.channel,
        request_id=env.id,
        bot_dir=turn.bot.path,
        data_dir=data_dir,
        settings=turn.bot.tools.settings,
        http=tools.http,
        ask_for_person=ask_for_person,
        received_at=env.received_at,
    )


class HandlerStage:
    """If the turn's intent has a handler, run it: it answers (the turn ends here) or falls through.

    A handler that raises must not cost the answer, nor trap the conversation in a broken flow:
    its flow is ended, the error logged, and the turn goes on to the LLM.
    """

    def __init__(
        self,
        catalog: HandlerCatalog,
        sessions: SessionStore,
        tools: ToolExecutor,
        *,
        data_dir: Path,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._catalog = catalog
        self._sessions = sessions
        self._tools = tools
        self._data_dir = data_dir
        self._log = logger or structlog.get_logger("relaybot.handlers")

    async def __call__(self, turn: Turn) -> None:
        if turn.intent is None or turn.session is None:
            return
        found = self._catalog.handler_for(turn.bot, turn.intent)
        if found is None:
            return
        name, handler = found
        turn.handler = name
        context = HandlerTurn(
            turn,
            intent=turn.intent,
            handlers=self._catalog.for_bot(turn.bot),
            sessions=self._sessions,
            tools=self._tools,
            tool_context=tool_context(turn, self._tools, self._data_dir),
        )
        try:
            await handler(context)
        except Exception as exc:
            await self._log.aexception("handler_failed", bot=turn.bot.name, handler=name, intent=turn.intent)
            turn.error = f"handler {name}: {type(exc).__name__}: {exc}"
            if turn.session.fields.get(ACTIVE_FLOW_FIELD):
                await context.end_flow()
