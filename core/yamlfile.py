"""YAML files people write by hand (conversation tests, labelled eval sets): parsed with the line of
every value kept, so an error can say `file:line`."""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["YamlLoader", "duplicate_keys", "line_of", "parse"]


class YamlLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true and false. In YAML 1.1 (PyYAML's default) `say: yes` or `say: no`, the
    most common answers in a conversation, would be booleans rather than what the user said."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for lines) and the data; raises `yaml.YAMLError` (with `problem_mark`) on bad YAML."""
    return yaml.compose(text, Loader=YamlLoader), yaml.load(text, Loader=YamlLoader)


def line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    """The 1-based line of the deepest node of `loc` found in the YAML tree."""
    node = root
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def duplicate_keys(node: yaml.Node | None) -> list[tuple[str, int]]:
    """Keys written twice in one mapping, anywhere in the tree, with the line of the second: PyYAML keeps
    the last silently, so half of what the author wrote would be dropped without a word."""
    found: list[tuple[str, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(getattr(key, "value", ""))
            if name in seen:
                found.append((name, key.start_mark.line + 1))
            seen.add(name)
            found += duplicate_keys(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found += duplicate_keys(item)
    return found
