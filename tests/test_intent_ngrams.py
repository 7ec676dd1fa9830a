"""The character n-grams the local classifier's model reads next to the embedding (core.intents.ngrams), and
what they change on the example bot, with the packaged ONNX embedder."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from core.bots import BotConfig, load_bot
from core.intents import LocalIntentClassifier
from core.intents.ngrams import NGRAM_BUCKETS, ngram_vectors
from core.knowledge.embeddings import OnnxMiniLMEmbedder
from tests.support.harness import REPO


@pytest.fixture(scope="module")
def embedder() -> OnnxMiniLMEmbedder:
    return OnnxMiniLMEmbedder.load()


def test_rows_are_unit_vectors_and_a_text_without_words_is_zero() -> None:
    rows = ngram_vectors(["refund pls", "cant login", "?!", ""])
    assert rows.shape == (4, NGRAM_BUCKETS)
    assert np.allclose(np.linalg.norm(rows[:2], axis=1), 1.0)
    assert not rows[2:].any()


def test_a_misspelt_word_keeps_most_of_its_ngrams_and_an_unrelated_one_shares_few() -> None:
    cancel, typo, other = ngram_vectors(["cancellation", "cancelation", "delivery"])
    assert float(cancel @ typo) > 0.6
    assert float(cancel @ other) < 0.1


def test_the_buckets_are_the_same_in_every_process() -> None:
    # Python's own hash() of a string changes with each process (PYTHONHASHSEED): a model trained in one worker
    # would read other columns in the next. crc32 does not.
    script = (
        "from core.intents.ngrams import ngram_vectors; "
        "print(ngram_vectors(['payment failed'])[0].nonzero()[0].tolist())"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout
        for seed in ("1", "2")
    }
    here = ngram_vectors(["payment failed"])[0].nonzero()[0].tolist()
    assert runs == {f"{here}\n"}


async def test_a_short_message_goes_where_its_words_point(embedder: OnnxMiniLMEmbedder) -> None:
    # Two words: the embedding alone put "payment failed" nearer the example bot's technical examples (something
    # failed); the n-grams of "payment" are those of its billing examples.
    support: BotConfig = load_bot(REPO / "bots" / "support")
    with_ngrams = await LocalIntentClassifier(embedder).classify(support, "payment failed")
    without = await LocalIntentClassifier(embedder, ngram_weight=0.0).classify(support, "payment failed")
    assert (with_ngrams.intent, without.intent) == ("billing", "technical")
