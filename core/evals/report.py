"""The eval report: text for the terminal, a dict for --json."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from core.evals.metrics import IntentFigures, RetrievalFigures

__all__ = ["as_json", "intent_lines", "retrieval_lines"]

#: mistakes and misses listed under the figures, so the author sees what to look at first
SHOWN = 10


def intent_lines(f: IntentFigures) -> list[str]:
    lines = [
        f"intents: {f.correct}/{f.total} right, accuracy {f.accuracy:.3f} "
        f"(local classifier, threshold {f.threshold:g}, default {f.default!r})",
        "",
        f"  {'intent':<16}{'n':>5}{'precision':>11}{'recall':>8}",
    ]
    for row in f.per_intent:
        lines.append(f"  {row.intent:<16}{row.support:>5}{_rate(row.precision):>11}{_rate(row.recall):>8}")
    width = max(8, *(len(label) + 2 for label in f.labels))
    lines += ["", "  confusion (rows: label, columns: routed to; none = below the threshold)"]
    lines.append("  " + " " * width + "".join(f"{label:>{width}}" for label in f.labels))
    for label in f.labels:
        counts = f.confusion[label]
        if sum(counts.values()):
            lines.append(f"  {label:<{width}}" + "".join(f"{counts[c] or '.':>{width}}" for c in f.labels))
    sweep = "  ".join(f"{_mark(t, f.threshold)} {a:.3f}" for t, a in f.sweep.items())
    lines += ["", f"  accuracy by threshold: {sweep}"]
    if f.mistakes:
        lines += ["", f"  wrong ({len(f.mistakes)}; label -> routed, best score):"]
        for text, label, predicted, score in f.mistakes[:SHOWN]:
            lines.append(f"    {label} -> {predicted} ({score:.2f}): {text}")
        if len(f.mistakes) > SHOWN:
            lines.append(f"    … and {len(f.mistakes) - SHOWN} more (--json lists them all)")
    return lines


def retrieval_lines(f: RetrievalFigures) -> list[str]:
    s = f.settings
    guard = "on" if s.name_guard else "off"
    lines = [
        f"retrieval: {f.answerable} answerable, {f.unanswerable} unanswerable questions "
        f"(set {s.knowledge_set!r}, top_k {s.top_k}, min_score {s.min_score:g}, name guard {guard})",
        "",
        f"  {'':<12}{'ranking':>9}{'retrieved':>11}",
        f"  {'recall@1':<12}{f.recall_at_1:>9.3f}{f.recall_at_1_retrieved:>11.3f}",
        f"  {f'recall@{f.k}':<12}{f.recall_at_k:>9.3f}{f.recall_at_k_retrieved:>11.3f}",
        "  (ranking: the expected document among the k most similar passages; retrieved: among the passages",
        "  the bot gives the model, above the threshold and at most top_k)",
        "",
        f'  "I don\'t know" on unanswerable: {_share(f.idk_unanswerable, f.unanswerable)}',
        f"  wrongly refused on answerable:  {_share(f.refused_answerable, f.answerable)}",
    ]
    if f.guard_refused:
        lines.append(
            f"  ({f.guard_refused} question(s) refused by the name guard or the word coverage, whatever the threshold)"
        )
    lines += ["", "  by min_score:  I don't know (unanswerable) / refused (answerable)"]
    for threshold, (idk, refused) in f.sweep.items():
        lines.append(f"    {_mark(threshold, s.min_score)}  {idk:.3f} / {refused:.3f}")
    if f.misses:
        lines += ["", f"  expected document not in the top {f.k} ({len(f.misses)}):"]
        for text, document, found in f.misses[:SHOWN]:
            lines.append(f"    {document}: {text}  [got {', '.join(found) or 'nothing'}]")
        if len(f.misses) > SHOWN:
            lines.append(f"    … and {len(f.misses) - SHOWN} more (--json lists them all)")
    return lines


def as_json(intents: IntentFigures | None, retrieval: RetrievalFigures | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if intents is not None:
        out["intents"] = {
            **asdict(intents),
            "accuracy": intents.accuracy,
            "sweep": {str(t): a for t, a in intents.sweep.items()},
            "mistakes": [
                {"text": t, "label": label, "routed": p, "score": score} for t, label, p, score in intents.mistakes
            ],
        }
    if retrieval is not None:
        out["retrieval"] = {
            **asdict(retrieval),
            "idk_rate": retrieval.idk_rate,
            "refused_rate": retrieval.refused_rate,
            "sweep": {str(t): {"idk_rate": i, "refused_rate": r} for t, (i, r) in retrieval.sweep.items()},
            "misses": [{"text": t, "document": d, "ranked": r} for t, d, r in retrieval.misses],
        }
    return out


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.3f} ({part}/{whole})" if whole else "- (none in the set)"


def _mark(threshold: float, current: float) -> str:
    """A threshold of the sweep; the configured one starred."""
    return f"{threshold:5.2f}{'*' if abs(threshold - current) < 1e-9 else ' '}"
