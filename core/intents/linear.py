"""A softmax (multinomial logistic) regression over message embeddings, trained on a bot's own intents.

The local classifier trains one per bot when it loads the bot's intents (core.intents.local): the rows are
the embeddings of each intent's examples, description and description topics, the classes the intents. A
centroid weighs every dimension of the embedding alike; the regression learns which directions separate this
bot's intents ("cancel" is near both "cancel my plan" and "downgrade my plan"; what tells them apart is
elsewhere). Plain numpy, full-batch gradient descent from zero for a fixed number of steps: the same examples
give the same model on every run, with no random start and no tolerance to tune.

The constants were chosen by repeated random sub-sampling on the dev bots' intents (`bench/knowledge.py
--tune`): the accuracy hardly moves between L2 0.001 and 0.01, or between 300 and 1,000 steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["L2", "LEARNING_RATE", "STEPS", "LinearModel", "train"]

#: the L2 penalty on the weights (a model of a few dozen rows in 384 dimensions would otherwise fit anything)
L2 = 0.003
#: gradient steps; the rows are unit vectors, so the loss's curvature is at most 0.5 and a step of 2 is stable
STEPS = 300
LEARNING_RATE = 2.0

Matrix = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True, slots=True)
class LinearModel:
    """Weights (dimensions x classes) and a bias per class; `logits(vector)` ranks the classes."""

    weights: Matrix
    bias: Matrix

    def logits(self, vector: np.ndarray[Any, Any]) -> Matrix:
        logits: Matrix = (vector @ self.weights + self.bias).astype(np.float32, copy=False)
        return logits


def train(
    vectors: np.ndarray[Any, Any],
    labels: np.ndarray[Any, Any],
    classes: int,
    *,
    l2: float = L2,
    steps: int = STEPS,
    learning_rate: float = LEARNING_RATE,
) -> LinearModel:
    """The regression for rows `vectors` (unit vectors) labelled `labels` (0..classes-1); blocking (a few
    milliseconds for 50 rows, about 0.1 s for 300 rows of 20 intents): call it off the event loop."""
    rows = len(vectors)
    x = np.asarray(vectors, dtype=np.float64)
    targets = np.eye(classes)[np.asarray(labels)]
    # Gradient descent from zero keeps the weights a combination of the rows (weights = x.T @ coefficients):
    # the same steps on the rows' similarities (rows x rows) rather than on the dimensions cost a third.
    similarities = x @ x.T
    coefficients = np.zeros((rows, classes))
    bias = np.zeros(classes)
    for _ in range(steps):
        logits = similarities @ coefficients + bias
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        gradient = (probabilities - targets) / rows
        coefficients -= learning_rate * (gradient + l2 * coefficients)
        bias -= learning_rate * gradient.sum(axis=0)
    return LinearModel(weights=(x.T @ coefficients).astype(np.float32), bias=bias.astype(np.float32))
