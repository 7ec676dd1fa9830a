"""The score distributions as a PNG, with the configured thresholds marked (matplotlib, imported here only:
`relaybot eval` without --plot does not need it installed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConfigError
from core.evals.metrics import IntentFigures, RetrievalFigures

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["write_plot"]


def write_plot(path: Path, intents: IntentFigures | None, retrieval: RetrievalFigures | None, *, bot: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display, no GUI toolkit
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("--plot needs matplotlib: pip install 'relaybot[plot]'") from exc

    panels = [p for p in (intents, retrieval) if p is not None]
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    column = 0
    if intents is not None:
        _histogram(
            axes[0][column],
            [("best intent right", intents.right_scores, "tab:green"), ("wrong", intents.wrong_scores, "tab:red")],
            threshold=intents.threshold,
            title=f"intent confidence (accuracy {intents.accuracy:.2f})",
            xlabel="best intent's similarity",
            label=f"[intents] threshold {intents.threshold:g}",
        )
        column += 1
    if retrieval is not None:
        _histogram(
            axes[0][column],
            [
                ("answerable", retrieval.answerable_scores, "tab:blue"),
                ("unanswerable", retrieval.unanswerable_scores, "tab:orange"),
            ],
            threshold=retrieval.settings.min_score,
            title=f"top retrieval score (recall@{retrieval.k} {retrieval.recall_at_k:.2f})",
            xlabel="best passage's cosine similarity",
            label=f"min_score {retrieval.settings.min_score:g}",
        )
    figure.suptitle(f"relaybot eval: {bot}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise ConfigError(f"cannot write the plot to {path}: {exc}") from exc
    finally:
        plt.close(figure)


def _histogram(
    ax: Axes, series: list[tuple[str, list[float], str]], *, threshold: float, title: str, xlabel: str, label: str
) -> None:
    values = [v for _, scores, _ in series for v in scores] + [threshold]
    low, high = min(values) - 0.02, max(values) + 0.02
    bins = [low + (high - low) * i / 30 for i in range(31)]
    for name, scores, colour in series:
        ax.hist(scores, bins=bins, alpha=0.6, color=colour, label=f"{name} ({len(scores)})")
    ax.axvline(threshold, color="black", linestyle="--", label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend()
