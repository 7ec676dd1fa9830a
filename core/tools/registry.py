"""The tools one bot declares (in its handlers.py, with `@bot.tool`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from core.errors import ConfigError
from core.llm.base import ToolSpec
from core.tools.base import Tool

# Both APIs accept ^[a-zA-Z0-9_-]{1,64}$ as a function/tool name.
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

__all__ = ["ToolRegistry"]


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if not TOOL_NAME.match(tool.name):
            raise ConfigError(f"tool name {tool.name!r} must be 1-64 letters, digits, '_' or '-'")
        if tool.name in self._tools:
            raise ConfigError(f"tool {tool.name!r} is declared twice")
        if tool.parameters.get("type") != "object":
            raise ConfigError(f'tool {tool.name!r}: parameters must be a JSON schema with "type": "object"')
        try:
            Draft202012Validator.check_schema(dict(tool.parameters))
        except SchemaError as exc:
            raise ConfigError(f"tool {tool.name!r}: parameters are not a valid JSON schema: {exc.message}") from exc
        self._tools[tool.name] = tool
        self._validators[tool.name] = Draft202012Validator(dict(tool.parameters))

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def problems(self, name: str, arguments: Mapping[str, Any]) -> list[str]:
        """What is wrong with `arguments` for tool `name` (empty: they are valid)."""
        validator = self._validators[name]
        return [
            f"{'/'.join(str(p) for p in error.absolute_path) or 'arguments'}: {error.message}"
            for error in validator.iter_errors(dict(arguments))
        ]

    def specs(self, names: Iterable[str]) -> tuple[ToolSpec, ...]:
        """The declarations of `names`, to offer the model; an unknown name is a configuration error."""
        out = []
        for name in names:
            tool = self._tools.get(name)
            if tool is None:
                raise ConfigError(f"[tools] llm names {name!r}, which no @bot.tool in handlers.py declares")
            out.append(tool.spec)
        return tuple(out)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)
