"""core/redis_keys.py lists every Redis key layout: a key built in the code and missing there fails."""

from __future__ import annotations

import re

from core.redis_keys import KEYS, namespaces
from tests.support.harness import REPO

# `f"{prefix}:q:{name}"`, `f"{self._prefix}:llm:cache:{key}"`, `f"{self._base}:dead"`, `f"{base}:messages"`
_BUILT = re.compile(r"\{(?:self\._)?(?:prefix|base)\}:([a-z]+(?::[a-z]+)*)")


def _built_keys() -> dict[str, set[str]]:
    """The literal words after the prefix of each key the code builds, with the files building them."""
    found: dict[str, set[str]] = {}
    for directory in ("core", "channels"):
        for path in (REPO / directory).rglob("*.py"):
            for words in _BUILT.findall(path.read_text()):
                found.setdefault(words, set()).add(str(path.relative_to(REPO)))
    return found


def _listed(words: str) -> bool:
    return any(re.search(rf":{re.escape(words)}(:|$)", layout.pattern) for layout in KEYS)


def test_every_key_the_code_builds_is_listed() -> None:
    built = _built_keys()
    assert built, "the pattern no longer finds how keys are built"
    unlisted = {words: sorted(files) for words, files in built.items() if not _listed(words)}
    assert not unlisted, f"Redis keys built but not listed in core/redis_keys.py: {unlisted}"


def test_every_listed_layout_is_built_and_its_module_exists() -> None:
    built_namespaces = {words.split(":")[0] for words in _built_keys()}
    assert namespaces() <= built_namespaces, f"listed but never built: {sorted(namespaces() - built_namespaces)}"
    for layout in KEYS:
        assert layout.pattern.startswith("P:"), layout.pattern
        assert (REPO / layout.module).is_file(), layout.module
        assert layout.type in {"STRING", "HASH", "LIST", "SET", "ZSET", "STREAM", "PUBSUB"}, layout.type
