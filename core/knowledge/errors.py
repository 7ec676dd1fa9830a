"""Knowledge errors: a branch of core.errors' tree (RelaybotError → KnowledgeError → ...).

Each message names the fix, because the person reading it is usually an operator at a terminal.
"""

from __future__ import annotations

from core.errors import RelaybotError


class KnowledgeError(RelaybotError):
    """The knowledge base or its embedding model failed."""


class EmbeddingModelError(KnowledgeError):
    """The offline embedding model could not be found or loaded."""


class KnowledgeStoreError(KnowledgeError):
    """chromadb could not be opened or queried (corrupted or missing directory, server unreachable)."""
