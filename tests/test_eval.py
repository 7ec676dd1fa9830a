"""`relaybot eval`: figures that are known in advance come out right, on the real classifier and a real
chromadb with the offline embedding; bad labelled sets give file:line errors; --plot and --json write.

A small bot written by each test (three intents, three short documents) keeps a run to a few seconds.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from core.cli import main
from core.settings import KnowledgeSettings

BOT_TOML = """
name = "mini"

[intents]
threshold = 0.2
default = "general"

[intents.billing]
description = "Paying, invoices and prices."
examples = ["send me the invoice for March", "my card was charged twice", "how much does the plan cost"]

[intents.cancellation]
description = "Ending the subscription or deleting the account."
examples = ["cancel my subscription", "delete my account for good", "stop renewing the plan"]

[intents.general]
description = "Greetings and anything else."
examples = ["hello there", "thank you", "what can you do"]
"""

DOCUMENTS = {
    "hours.md": "# Opening hours\n\nThe Lisbon office opens at 08:00 and closes at 18:00 on weekdays.\n",
    "parking.md": "# Parking\n\nVisitors park in the underground garage on level minus two, free for three hours.\n",
    "wifi.md": "# Guest wifi\n\nThe guest wifi network is called Harbour-Guest; its password is at reception.\n",
}

EXACT = """
intents:
  billing:
    - send me the invoice for March
    - my card was charged twice
  cancellation:
    - cancel my subscription
    - delete my account for good
  general:
    - hello there
    - thank you
"""

QUESTIONS = """
questions:
  hours.md:
    - When does the Lisbon office open on weekdays?
  parking.md:
    - Where do visitors park, in the underground garage?
  wifi.md:
    - What is the guest wifi network called?
  none:
    - what's the capital of Australia
"""


@pytest.fixture
def bot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bots" / "mini"
    (folder / "knowledge").mkdir(parents=True)
    (folder / "eval").mkdir()
    (folder / "bot.toml").write_text(BOT_TOML)
    for name, text in DOCUMENTS.items():
        (folder / "knowledge" / name).write_text(text)
    for name, value in {
        "RELAYBOT_BOTS_DIR": str(tmp_path / "bots"),
        "RELAYBOT_DATA_DIR": str(tmp_path / "data"),
        "RELAYBOT_DEFAULT_BOT": "mini",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("REDIS_URL", "DATABASE_URL", "CHROMA_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return folder


def write(bot: Path, name: str, text: str) -> Path:
    path = bot / "eval" / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def run_json(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "figures.json"
    assert main(["eval", "--bot", "mini", "--json", str(out), *args]) == 0
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def test_training_examples_are_all_right_and_a_wrong_label_shows_in_the_confusion_matrix(
    bot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(bot, "intents.yaml", EXACT)
    intents = run_json(tmp_path)["intents"]
    assert intents["accuracy"] == 1.0 and intents["total"] == 6 and intents["mistakes"] == []
    assert intents["confusion"]["billing"] == {"billing": 2, "cancellation": 0, "general": 0, "none": 0}
    assert {row["intent"]: row["recall"] for row in intents["per_intent"]} == {
        "billing": 1.0,
        "cancellation": 1.0,
        "general": 1.0,
    }
    assert "accuracy 1.000" in capsys.readouterr().out

    # The same utterance, labelled billing on purpose: one mistake, in the billing row's cancellation column.
    write(bot, "intents.yaml", EXACT.replace("    - my card was charged twice", "    - stop renewing the plan"))
    intents = run_json(tmp_path)["intents"]
    assert intents["correct"] == 5 and intents["accuracy"] == pytest.approx(5 / 6)
    assert intents["confusion"]["billing"]["cancellation"] == 1
    assert intents["mistakes"][0]["text"] == "stop renewing the plan"
    assert {row["intent"]: row["precision"] for row in intents["per_intent"]}["cancellation"] == pytest.approx(2 / 3)
    out = capsys.readouterr().out
    assert "billing -> cancellation" in out and "confusion" in out


def test_an_utterance_no_intent_fits_is_right_when_it_falls_below_the_threshold(bot: Path, tmp_path: Path) -> None:
    write(bot, "intents.yaml", "intents:\n  none:\n    - the volcano erupted near the glacier\n")
    (bot / "bot.toml").write_text(BOT_TOML.replace("threshold = 0.2", "threshold = 0.9"))
    intents = run_json(tmp_path)["intents"]
    assert intents["accuracy"] == 1.0 and intents["confusion"]["none"]["none"] == 1
    # Below 0.9, and far from everything: the sweep's lower thresholds route it to an intent.
    assert intents["sweep"]["0.9"] == 1.0


def test_retrieval_recall_and_i_dont_know_on_a_set_whose_answers_are_known(
    bot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(bot, "questions.yaml", QUESTIONS)
    retrieval = run_json(tmp_path, "--k", "2")["retrieval"]
    assert (retrieval["answerable"], retrieval["unanswerable"], retrieval["k"]) == (3, 1, 2)
    assert retrieval["recall_at_1"] == retrieval["recall_at_k"] == 1.0
    assert retrieval["recall_at_1_retrieved"] == 1.0
    assert retrieval["idk_rate"] == 1.0 and retrieval["refused_rate"] == 0.0
    # The settings in force are reported: here the defaults.
    defaults = KnowledgeSettings()
    assert retrieval["settings"]["min_score"] == defaults.min_score and retrieval["settings"]["top_k"] == 4
    assert len(retrieval["answerable_scores"]) == 3 and len(retrieval["unanswerable_scores"]) == 1
    assert max(retrieval["unanswerable_scores"]) < 0.33 < min(retrieval["answerable_scores"])
    out = capsys.readouterr().out
    assert "recall@2" in out and '"I don\'t know" on unanswerable: 1.000 (1/1)' in out


def test_a_higher_threshold_in_bot_toml_refuses_answerable_questions(bot: Path, tmp_path: Path) -> None:
    write(bot, "questions.yaml", QUESTIONS)
    (bot / "bot.toml").write_text(BOT_TOML + "\n[knowledge]\nmin_score = 0.99\n")
    retrieval = run_json(tmp_path)["retrieval"]
    assert retrieval["refused_rate"] == 1.0 and retrieval["recall_at_1_retrieved"] == 0.0
    assert retrieval["recall_at_1"] == 1.0  # the ranking does not change with the threshold


def test_the_plot_is_a_png(bot: Path, tmp_path: Path) -> None:
    write(bot, "intents.yaml", EXACT)
    write(bot, "questions.yaml", QUESTIONS)
    plot = tmp_path / "out" / "scores.png"
    assert main(["eval", "--bot", "mini", "--plot", str(plot)]) == 0
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "intents.yaml",
            "intents:\n  billing:\n    - an invoice\n  refunds:\n    - money back\n",
            ":4: no intent 'refunds'",
        ),
        ("intents.yaml", "intents:\n  billing:\n    - a\n  billing:\n    - b\n", ":4: 'billing' is written twice"),
        ("intents.yaml", "intents:\n  billing: an invoice\n", ":2: 'billing' must be a list"),
        ("intents.yaml", "intents:\n  billing:\n    - ''\n", ":3: 'billing' #1: must be a non-empty text"),
        ("intents.yaml", "utterances: []\n", ":1: unknown key 'utterances'"),
        ("intents.yaml", "intents:\n  billing:\n    - [unclosed\n", ":4: not valid YAML"),
        (
            "intents.yaml",
            "intents:\n  billing:\n    - my invoice\n  general:\n    - My  invoice\n",
            ":5: 'My  invoice' is already on line 3",
        ),
        ("questions.yaml", "questions:\n  hours.md:\n    - when\n  faq.md:\n    - what\n", ":4: no document 'faq.md'"),
        ("questions.yaml", "- a question\n", ":1: the file must be a mapping with 'questions:'"),
    ],
)
def test_a_bad_labelled_set_exits_2_with_the_file_and_line(
    bot: Path, name: str, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(bot, name, text)
    assert main(["eval", "--bot", "mini"]) == 2
    err = capsys.readouterr().err
    assert f"{path}{message}" in err, err


def test_a_bot_without_labelled_sets_is_told_where_to_put_them(bot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--bot", "mini"]) == 2
    assert "no intents.yaml or questions.yaml" in capsys.readouterr().err


async def test_the_threshold_sweep_at_the_bots_own_threshold_is_the_accuracy() -> None:
    # The trained model chooses the intent, not the highest score: the sweep must keep the model's choice and
    # only move the threshold, or its figure at the bot's own threshold disagrees with the accuracy.
    from core.bots import load_bot
    from core.evals.metrics import intent_figures
    from core.evals.runner import classify_utterances
    from core.evals.sets import load_sets
    from core.intents import LocalIntentClassifier
    from core.knowledge.embeddings import OnnxMiniLMEmbedder
    from tests.support.harness import REPO

    forkful = load_bot(REPO / "bench" / "data" / "heldout" / "bots" / "forkful")
    classifier = LocalIntentClassifier(OnnxMiniLMEmbedder.load())
    outcomes = await classify_utterances(classifier, forkful, load_sets(forkful).utterances)
    figures = intent_figures(forkful.intents, outcomes)
    assert any(o.result.intent != max(o.result.scores, key=o.result.scores.__getitem__) for o in outcomes)
    assert figures.sweep[forkful.intents.threshold] == figures.correct / figures.total
