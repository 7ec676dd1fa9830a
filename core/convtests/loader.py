"""Reads test files: YAML in, validated conversations out, or a `TestFileError` that names the file,
the line, the test and what to fix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from core.convtests.spec import ConversationSpec, TestFileSpec
from core.errors import RelaybotError
from core.yamlfile import line_of, parse

__all__ = ["Conversation", "TestFileError", "find_test_files", "load_file", "load_paths"]


class TestFileError(RelaybotError):
    """A test file that cannot be read or does not follow the format; `problems` are "file:line: ..." lines."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        super().__init__(f"{path}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))
        self.path = path
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class Conversation:
    """One test as loaded: its spec, where it was written, and the line of each turn."""

    spec: ConversationSpec
    path: Path
    line: int
    turn_lines: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def id(self) -> str:
        """What `-k` matches and JUnit calls the test: "file.yaml::name"."""
        return f"{self.path.name}::{self.spec.name}"


def find_test_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files named, and those under the folders named, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise TestFileError(path, ["no such file or folder"])
    return found


def load_paths(paths: Iterable[Path]) -> list[Conversation]:
    """Every conversation in these files and folders; all files are checked before any error is raised."""
    conversations: list[Conversation] = []
    problems: list[str] = []
    first: Path | None = None
    for path in find_test_files(paths):
        try:
            conversations.extend(load_file(path))
        except TestFileError as exc:
            first = first or exc.path
            problems.extend(exc.problems)
    if problems:
        assert first is not None
        raise TestFileError(first, problems)
    return conversations


def load_file(path: Path) -> list[Conversation]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TestFileError(path, [f"{path}: cannot be read: {exc}"]) from exc
    try:
        root, data = parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise TestFileError(path, [f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]) from exc
    if isinstance(data, list):
        raise TestFileError(path, [f"{path}:1: the file is a mapping with 'tests:', a list of conversations"])
    try:
        spec = TestFileSpec.model_validate(data)
    except ValidationError as exc:
        errors = _without_union_noise(exc.errors())
        raise TestFileError(path, [_describe(path, root, data, error) for error in errors]) from exc
    conversations = []
    for index, test in enumerate(spec.tests):
        turn_lines = tuple(line_of(root, ("tests", index, "turns", n)) for n in range(len(test.turns)))
        conversations.append(Conversation(test, path, line_of(root, ("tests", index)), turn_lines))
    return conversations


def _without_union_noise(errors: list[Any]) -> list[Any]:
    """For a value that may be a text or a list (`model`), pydantic reports a failing list twice: the
    list's own problems and "should be a valid string". The second says nothing: dropped."""
    fields = [tuple(p for p in e["loc"] if _is_field(p)) for e in errors]
    kept = []
    for error, loc in zip(errors, fields, strict=True):
        is_branch = any(not _is_field(p) for p in error["loc"])
        others = any(other[: len(loc)] == loc and other != loc for other in fields)
        if not (is_branch and error["type"] == "string_type" and others):
            kept.append(error)
    return kept


def _describe(path: Path, root: yaml.Node | None, data: Any, error: Any) -> str:
    loc: tuple[int | str, ...] = tuple(p for p in error["loc"] if _is_field(p))
    where: list[str] = []
    if len(loc) >= 2 and loc[0] == "tests" and isinstance(loc[1], int):
        name = _get(data, ("tests", loc[1], "name"))
        where.append(f"test {name!r}" if isinstance(name, str) else f"test #{loc[1] + 1}")
        if len(loc) >= 4 and loc[2] == "turns" and isinstance(loc[3], int):
            where.append(f"turn {loc[3] + 1}")
    rest = loc[2 * len(where) :]  # what follows "tests, i" and "turns, n"
    if error["type"] == "extra_forbidden":
        rest = rest[:-1]  # the message names the key
    field = " ".join(f"#{part + 1}" if isinstance(part, int) else part for part in rest)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown key {loc[-1]!r} (see docs/testing-conversations.md for the keys)"
    elif error["type"] == "missing":
        message = f"'{loc[-1]}' is required"
    prefix = ", ".join(where)
    subject = f"{prefix}: {field}" if prefix and field else prefix or field
    return f"{path}:{line_of(root, loc)}: {subject + ': ' if subject else ''}{message}"


def _is_field(part: int | str) -> bool:
    # pydantic adds the branch of a union it tried ("str", "list[ScriptEntry]"): not a key of the file.
    return isinstance(part, int) or ("[" not in part and part not in ("str", "dict", "list", "float", "int", "none"))


def _get(data: Any, path: tuple[int | str, ...]) -> Any:
    for part in path:
        if isinstance(part, int) and isinstance(data, list) and part < len(data):
            data = data[part]
        elif isinstance(part, str) and isinstance(data, dict):
            data = data.get(part)
        else:
            return None
    return data
