"""How a run is shown: one line per conversation, each failure's expected and actual, and JUnit XML."""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path

from core.convtests.runner import ConversationResult

__all__ = ["describe_failure", "result_line", "summary_line", "write_junit"]

#: the reply shown under a failure, at most (a long knowledge answer would bury the diff)
_REPLY_LINES = 12


def result_line(result: ConversationResult) -> str:
    status = "PASS" if result.passed else "FAIL"
    return f"{status}  {result.conversation.id}  ({result.seconds:.2f} s)"


def describe_failure(result: ConversationResult) -> str:
    """Which turn, which expectation, expected against actual, and what the bot replied."""
    conversation = result.conversation
    lines = [f"FAIL {conversation.id}  ({conversation.path}:{conversation.line})"]
    for problem in result.problems:
        lines.append(f"  {problem}")
    for (turn, line, say, reply), group in groupby(result.mismatches, key=lambda m: (m.turn, m.line, m.say, m.reply)):
        lines.append(f"  turn {turn} ({conversation.path}:{line}), the user said: {say!r}")
        if turn <= len(result.turns):
            lines.append(f"    the bot: {result.turns[turn - 1].describe()}")
        for mismatch in group:
            lines.append(f"    {mismatch.expectation}:")
            lines.append(f"      expected: {mismatch.expected}")
            lines.append(f"      actual:   {mismatch.actual}")
        lines.append("    the reply was:" if reply is not None else "    there was no reply")
        if reply is not None:
            shown = reply.splitlines() or [""]
            lines.extend(f"      | {text}" for text in shown[:_REPLY_LINES])
            if len(shown) > _REPLY_LINES:
                lines.append(f"      | … ({len(shown) - _REPLY_LINES} more lines)")
    return "\n".join(lines)


def summary_line(results: Sequence[ConversationResult], seconds: float) -> str:
    failed = sum(1 for r in results if not r.passed)
    passed = len(results) - failed
    parts = [f"{passed} passed"] + ([f"{failed} failed"] if failed else [])
    return f"{', '.join(parts)} in {seconds:.2f} s"


def write_junit(results: Sequence[ConversationResult], path: Path, *, seconds: float) -> None:
    """JUnit XML as CI systems read it: a suite per test file, a case per conversation."""
    root = ET.Element("testsuites", name="relaybot conversation tests", time=f"{seconds:.3f}")
    root.set("tests", str(len(results)))
    root.set("failures", str(sum(1 for r in results if not r.passed)))
    for file, group in groupby(results, key=lambda r: r.conversation.path):
        cases = list(group)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=str(file),
            tests=str(len(cases)),
            failures=str(sum(1 for r in cases if not r.passed)),
            errors="0",
            time=f"{sum(r.seconds for r in cases):.3f}",
        )
        for result in cases:
            case = ET.SubElement(
                suite, "testcase", classname=file.stem, name=result.conversation.name, time=f"{result.seconds:.3f}"
            )
            case.set("file", str(file))
            case.set("line", str(result.conversation.line))
            if not result.passed:
                failure = ET.SubElement(case, "failure", message=_first_problem(result))
                failure.text = describe_failure(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _first_problem(result: ConversationResult) -> str:
    if result.problems:
        return textwrap.shorten(result.problems[0], 200)
    m = result.mismatches[0]
    return textwrap.shorten(f"turn {m.turn}: {m.expectation}: expected {m.expected}; actual: {m.actual}", 200)
