"""The labelled sets in `bots/<name>/eval/`: read, validated against the bot, or an `EvalFileError` that
names the file, the line and what to fix.

    intents.yaml                          questions.yaml
    intents:                              questions:
      billing:                              billing-and-invoices.md:
        - why was I charged twice             - can I pay with PayPal?
      none:                                 none:
        - what's the weather tomorrow         - what's the capital of Australia

Keys are the bot's intents (or `none`: no intent fits, the message belongs to the default intent) and
the files of its knowledge folder (or `none`: the documents do not answer it). Grouped by label rather
than one label per line: an author writes a set intent by intent, document by document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from core.bots import BotConfig
from core.errors import RelaybotError
from core.knowledge.cli import knowledge_folder
from core.yamlfile import duplicate_keys, line_of, parse

__all__ = [
    "EVAL_FOLDER",
    "NONE",
    "EvalFileError",
    "EvalSets",
    "LabelledQuestion",
    "LabelledUtterance",
    "load_sets",
]

#: where a bot keeps its labelled sets, inside its folder
EVAL_FOLDER = "eval"
#: the label of an utterance no intent fits, and of a question the documents do not answer
NONE = "none"

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _IntentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    intents: dict[str, list[Text]]


class _QuestionsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    questions: dict[str, list[Text]]


class EvalFileError(RelaybotError):
    """A labelled set that cannot be read or does not follow the format; `problems` are "file:line: ..." lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the labelled sets\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class LabelledUtterance:
    text: str
    #: the intent it is about; None: no intent fits (the bot should route it to its default intent)
    intent: str | None
    line: int


@dataclass(frozen=True, slots=True)
class LabelledQuestion:
    text: str
    #: the knowledge file that answers it (as retrieval names sources); None: the documents do not
    document: str | None
    line: int


@dataclass(frozen=True, slots=True)
class EvalSets:
    utterances: tuple[LabelledUtterance, ...]
    questions: tuple[LabelledQuestion, ...]
    #: the files read (either may be missing, not both)
    files: tuple[Path, ...]


def eval_folder(bot: BotConfig) -> Path:
    return (bot.path or Path("bots") / bot.name) / EVAL_FOLDER


def load_sets(bot: BotConfig, folder: Path | None = None) -> EvalSets:
    """The bot's labelled sets; every problem of both files is listed before the error is raised."""
    folder = folder or eval_folder(bot)
    intents_path, questions_path = folder / "intents.yaml", folder / "questions.yaml"
    if not intents_path.is_file() and not questions_path.is_file():
        raise EvalFileError(
            [f"{folder}: no intents.yaml or questions.yaml; write them (see docs/eval.md for the format)"]
        )
    problems: list[str] = []
    utterances: list[LabelledUtterance] = []
    questions: list[LabelledQuestion] = []
    if intents_path.is_file():
        groups = _read(intents_path, _IntentsFile, "intents", problems)
        known = set(bot.intents.items)
        if groups is not None and not known:
            problems.append(f"{intents_path}:1: bot '{bot.name}' declares no intents in bot.toml")
        elif groups is not None:
            for label, (line, items) in groups.items():
                if label != NONE and label not in known:
                    names = ", ".join(sorted(known))
                    problems.append(f"{intents_path}:{line}: no intent {label!r} in bot.toml (one of: {names}, none)")
                intent = None if label == NONE else label
                utterances += [LabelledUtterance(text, intent, at) for text, at in items]
            problems += _repeated(intents_path, [(u.text, u.line) for u in utterances])
    if questions_path.is_file():
        groups = _read(questions_path, _QuestionsFile, "questions", problems)
        documents = knowledge_folder(bot)
        for label, (line, items) in (groups or {}).items():
            if label != NONE and not (documents / label).is_file():
                problems.append(
                    f"{questions_path}:{line}: no document {label!r} in {documents} "
                    "(name a file of the bot's knowledge folder as retrieval cites it, or none)"
                )
            document = None if label == NONE else label
            questions += [LabelledQuestion(text, document, at) for text, at in items]
        problems += _repeated(questions_path, [(q.text, q.line) for q in questions])
    if problems:
        raise EvalFileError(problems)
    files = tuple(p for p in (intents_path, questions_path) if p.is_file())
    return EvalSets(tuple(utterances), tuple(questions), files)


Groups = dict[str, tuple[int, list[tuple[str, int]]]]


def _read(path: Path, model: type[_IntentsFile | _QuestionsFile], key: str, problems: list[str]) -> Groups | None:
    """label -> (line of the label, [(text, line)]), or None with the file's problems added."""
    try:
        root, data = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot be read: {exc}")
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problems.append(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}")
        return None
    found = [f"{path}:{line}: {name!r} is written twice; merge the two lists" for name, line in duplicate_keys(root)]
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        problems += found + [_describe(path, root, key, error) for error in exc.errors()]
        return None
    if found:
        problems += found
        return None
    groups: dict[str, list[str]] = getattr(parsed, key)
    if not groups:
        problems.append(f"{path}:{line_of(root, (key,))}: '{key}' is empty")
    return {
        str(label): (
            line_of(root, (key, label)),
            [(text, line_of(root, (key, label, index))) for index, text in enumerate(texts)],
        )
        for label, texts in groups.items()
    }


def _describe(path: Path, root: yaml.Node | None, key: str, error: Any) -> str:
    loc = tuple(error["loc"])
    line = line_of(root, loc)
    example = f"{key}:\\n  LABEL:\\n    - text"
    if not loc or error["type"] == "model_type":
        return f"{path}:{line}: the file must be a mapping with '{key}:' ({example})"
    if error["type"] == "missing":
        return f"{path}:{line}: '{key}' is required ({example})"
    if error["type"] == "extra_forbidden":
        return f"{path}:{line}: unknown key {loc[-1]!r}: the file holds only '{key}'"
    if error["type"] == "dict_type":
        return f"{path}:{line}: '{key}' must map each label to a list of texts ({example})"
    if error["type"] == "list_type":
        return f"{path}:{line}: {loc[1]!r} must be a list of texts (- one per line)"
    if error["type"] in ("string_type", "string_too_short"):
        return f"{path}:{line}: {loc[1]!r} #{int(loc[2]) + 1}: must be a non-empty text"
    return f"{path}:{line}: {' '.join(map(str, loc))}: {error['msg']}"


def _repeated(path: Path, texts: list[tuple[str, int]]) -> list[str]:
    # The same text twice counts twice in every figure; under two labels it cannot be right twice.
    first: dict[str, int] = {}
    problems = []
    for text, line in texts:
        key = " ".join(text.casefold().split())
        if key in first:
            problems.append(f"{path}:{line}: {text!r} is already on line {first[key]}")
        else:
            first[key] = line
    return problems
