"""The settings reference, generated from the settings classes: `python -m core.settings_doc > docs/settings.md`.

A hand-written table drifts from the code; this one is rendered from the fields themselves (name,
environment variable, type with its bounds, default, description), and a test fails when the
committed file and the code disagree.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from core.settings import BOOTSTRAP_ENV, Settings

REGENERATE = "python -m core.settings_doc > docs/settings.md"

_HEADER = f"""# Settings reference

<!-- Generated from core/settings.py by `{REGENERATE}`: edit the settings classes, not this file. -->

Environment variables override `config/<RELAYBOT_ENV>.toml`, which overrides `config/default.toml`,
which overrides the defaults below (see [Configuration](configuration.md)). In a TOML file a setting
is written by its name (`port = 8080`; nested ones under their section: `[web]` then
`max_text_chars = 4000`). In the environment, lists and objects are JSON
(`RELAYBOT_WEB__ALLOWED_ORIGINS='["https://www.example.com"]'`). Secrets belong in the environment only.

| setting | environment variable | type | default | description |
|---|---|---|---|---|
"""


def render() -> str:
    """docs/settings.md as it should be for the settings classes in this checkout."""
    rows = [_row(*row) for row in _rows()]
    return _HEADER + "".join(rows)


def _rows() -> Iterator[tuple[str, str, str, str, str]]:
    prefix = Settings.model_config.get("env_prefix", "")
    delimiter = Settings.model_config.get("env_nested_delimiter") or "__"
    sections: list[tuple[str, FieldInfo, type[BaseModel]]] = []
    for name, info in Settings.model_fields.items():
        section = _model(info.annotation)
        if section is not None:
            # Nested models go after the top-level settings, each under a row of its own.
            sections.append((name, info, section))
            continue
        yield (f"`{name}`", _env_names(prefix + name.upper(), info), _type(info), _default(info), _text(info))
    for name, _, section in sections:
        env = f"{prefix}{name.upper()}{delimiter}"
        yield (f"**`[{name}]`**", f"`{env}*`", "section", "", _text_of(section.__doc__))
        for field, info in section.model_fields.items():
            yield (f"`{name}.{field}`", f"`{env}{field.upper()}`", _type(info), _default(info), _text(info))
    for env_name, (default, meaning) in BOOTSTRAP_ENV.items():
        yield ("", f"`{env_name}`", "path", f"`{default}`", _text_of(meaning))


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |\n"


def _model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _env_names(default_name: str, info: FieldInfo) -> str:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        names = [str(choice) for choice in alias.choices]
        return " or ".join(f"`{name}`" for name in names)
    return f"`{default_name}`"


def _type(info: FieldInfo) -> str:
    bounds = []
    for item in info.metadata:
        for cls, sign in (
            (annotated_types.Ge, "≥"),
            (annotated_types.Gt, ">"),
            (annotated_types.Le, "≤"),
            (annotated_types.Lt, "<"),
        ):
            if isinstance(item, cls):
                bounds.append(f"{sign} {getattr(item, cls.__name__.lower())}")
    return ", ".join([_annotation(info.annotation), *bounds])


def _annotation(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_annotation(arg) for arg in args if arg is not type(None))
    if origin is Literal:
        return " or ".join(f"`{arg}`" for arg in args)
    if origin in (list, dict):
        return f"JSON `{_container(annotation)}`"
    if annotation is SecretStr:
        return "secret"
    if annotation is Path:
        return "path"
    return str(getattr(annotation, "__name__", annotation))


def _container(annotation: Any) -> str:
    """`list[str]`, `dict[str, list[str]]`: spelled as in Python, without the markup of _annotation."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_container(arg) for arg in args)}]"
    return "secret" if annotation is SecretStr else str(getattr(annotation, "__name__", annotation))


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, Path):
        value = str(value)
    # JSON spells values the way the environment takes them (true, ["*"], {}).
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def _text(info: FieldInfo) -> str:
    return _text_of(info.description)


def _text_of(text: str | None) -> str:
    # A pipe would end the table cell; a newline would end the row.
    return " ".join((text or "").split()).replace("|", "\\|")


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
