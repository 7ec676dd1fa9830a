"""The docs stay true: the settings reference matches the code, links resolve, CI runs the README's test command."""

from __future__ import annotations

import re
import subprocess
import sys

from core.settings import Settings
from core.settings_doc import REGENERATE, render
from tests.support.harness import REPO

DOCS = [REPO / "README.md", REPO / "SECURITY.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_settings_reference_matches_the_settings_classes() -> None:
    committed = (REPO / "docs" / "settings.md").read_text()
    assert committed == render(), f"docs/settings.md is out of date with core/settings.py: run `{REGENERATE}`"


def test_the_regenerate_command_prints_the_reference() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "core.settings_doc"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    assert printed == render()


def test_every_setting_has_a_description() -> None:
    missing = [name for name, info in Settings.model_fields.items() if not info.description]
    for section in ("web", "api", "slack", "telegram", "twilio", "knowledge", "console"):
        model = Settings.model_fields[section].annotation
        assert model is not None
        missing += [f"{section}.{name}" for name, info in model.model_fields.items() if not info.description]
    assert not missing, f"give these settings a description= in core/settings.py: {missing}"


def test_the_reference_names_nested_settings_by_their_environment_variable() -> None:
    reference = render()
    assert "`RELAYBOT_WEB__NEW_SESSIONS_PER_MINUTE_PER_IP`" in reference
    assert "`DATABASE_URL` or `RELAYBOT_DATABASE_URL`" in reference
    assert "`RELAYBOT_CONFIG_DIR`" in reference


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_the_docs_resolve() -> None:
    broken = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.name}: {target}")
            elif anchor:
                headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{doc.name}: {target}")
    assert not broken, broken


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    readme = (REPO / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (command,) = re.findall(r"^(make test)\b", quick_start, flags=re.M)
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == command


def test_the_readme_links_every_guide() -> None:
    readme = (REPO / "README.md").read_text()
    unlinked = [doc.name for doc in (REPO / "docs").glob("*.md") if f"(docs/{doc.name})" not in readme]
    assert not unlinked
