"""How retrieved passages are shown to the model: numbered, with their sources, so replies can cite [n]."""

from __future__ import annotations

from collections.abc import Sequence

from core.knowledge.passage import Passage

NO_PASSAGES = (
    "Knowledge base: nothing relevant was found for this message. If the answer is not in the conversation, "
    "say plainly that you don't know yet; do not make it up."
)


def format_passages(passages: Sequence[Passage]) -> str:
    """The system prompt's knowledge section."""
    if not passages:
        return NO_PASSAGES
    lines = [
        "Knowledge base passages (answer from these when they are relevant, and cite them as [1], [2]; "
        "if they do not answer the question, say you don't know yet):"
    ]
    for number, passage in enumerate(passages, start=1):
        lines.append(f"\n[{number}] {passage.label}\n{passage.text.strip()}")
    return "\n".join(lines)
