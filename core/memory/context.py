"""What memory adds to the system message: the user's known facts and the running summary."""

from __future__ import annotations

from collections.abc import Sequence

from core.memory.facts import label
from core.stores.base import Summary, UserFact

__all__ = ["memory_block"]


def memory_block(facts: Sequence[UserFact], summary: Summary | None) -> str:
    """Text to append to the system message ("" when there is nothing to add)."""
    parts: list[str] = []
    if facts:
        lines = "\n".join(f"- {label(f.key)}: {f.value}" for f in facts)
        parts.append("Known user facts (the user told you these earlier; use them instead of asking again):\n" + lines)
    if summary is not None and summary.text.strip():
        parts.append(
            "Summary of the earlier conversation (the older messages themselves are not shown):\n"
            + summary.text.strip()
        )
    return "".join(f"\n\n{part}" for part in parts)
