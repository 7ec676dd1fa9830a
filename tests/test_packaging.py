"""What a new user meets on install: no setuptools deprecation warning, no silent minute."""

from __future__ import annotations

import re
import tomllib

from tests.support.harness import REPO


def test_the_license_is_an_spdx_string() -> None:
    # The `{ text = ... }` table is deprecated by setuptools and warned about on every install.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    (requirement,) = pyproject["build-system"]["requires"]
    minimum = re.fullmatch(r"setuptools>=(\d+)", requirement)
    assert minimum and int(minimum[1]) >= 77  # the first setuptools that reads the SPDX string


def test_make_install_shows_what_pip_is_doing() -> None:
    recipe = (REPO / "Makefile").read_text()
    (install,) = [line for line in recipe.splitlines() if "pip install" in line and "-e " in line]
    assert "--quiet" not in install and " -q" not in install
