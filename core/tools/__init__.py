"""Tools: functions a handler or the model (by function calling) can call, with a JSON schema for
their arguments, run with a timeout, logged with latency and outcome, never failing the turn."""

from core.tools.base import Tool, ToolContext, ToolError, ToolFunction, ToolResult, WithButtons
from core.tools.executor import ToolExecutor
from core.tools.registry import ToolRegistry

__all__ = [
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolExecutor",
    "ToolFunction",
    "ToolRegistry",
    "ToolResult",
    "WithButtons",
]
