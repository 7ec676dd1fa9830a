"""The model chains of a test run: each conversation's own scripted provider, or the offline one.

One runtime serves every conversation of a run, so the provider is chosen per conversation through a
context variable set by the runner: the pipeline's stages and the memory stages after the reply all run
in the conversation's task (or tasks copied from it), and see its provider.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from core.bots import BotConfig
from core.llm.base import LLMProvider
from core.llm.chain import Chain, ChainSource
from core.llm.factory import ChainFactory, offline_provider, provider_chains, single_provider_chains
from core.settings import Settings

__all__ = ["TestChains"]


class TestChains(ChainFactory):
    """`for_bot` gives a one-step chain of the current conversation's provider (the offline provider
    when the test has no model script): no SDK, no network, no breaker or cache between tests."""

    __test__ = False

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._offline = provider_chains(offline_provider)
        self._current: ContextVar[ChainSource | None] = ContextVar("convtest_chains", default=None)

    @contextlib.contextmanager
    def using(self, provider: LLMProvider | None) -> Iterator[None]:
        """Within this block (and tasks started in it), bots answer through `provider`."""
        token = self._current.set(single_provider_chains(provider) if provider is not None else None)
        try:
            yield
        finally:
            self._current.reset(token)

    def for_bot(self, bot: BotConfig) -> Chain:
        return (self._current.get() or self._offline)(bot)
