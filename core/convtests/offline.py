"""The runtime that `relaybot test` and `relaybot eval` run a bot on: the real pipeline, offline, in this
process, touching nothing of the configured deployment.

Built from the settings like any other but on embedded stores in a temporary data folder (SQLite
history, sessions in memory, the in-memory bus, no Redis, no Chroma server, the offline embedding).
The knowledge of each bot under test is ingested into a store kept between runs (DATA_DIR/convtests/
chroma: unchanged files are skipped, so only the first run pays for embedding the documents).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from core.bots import BotConfig
from core.clock import Clock
from core.convtests.chains import TestChains
from core.knowledge.cli import knowledge_folder
from core.knowledge.service import KnowledgeService
from core.pipeline.pipeline import Stage
from core.runtime import Runtime
from core.settings import Settings

__all__ = ["offline_runtime"]


@contextlib.asynccontextmanager
async def offline_runtime(
    settings: Settings,
    *,
    bots: Sequence[str],
    report: Callable[[str], None] | None = None,
    clock: Clock | None = None,
    observers: Sequence[Stage] = (),
) -> AsyncIterator[Runtime]:
    """A runtime with these bots' knowledge folders ingested; `report` hears of (re)ingests; `clock`
    is the time its turns read (the system's by default).

    Its model chains (`runtime.chains`) are `TestChains`: the offline provider, or a test's script.
    """
    with tempfile.TemporaryDirectory(prefix="relaybot-test-") as tmp:
        offline = settings.model_copy(
            update={
                "data_dir": Path(tmp),
                "database_url": None,
                "redis_url": None,
                "chroma_url": None,
                "bus": "memory",
                "knowledge": settings.knowledge.model_copy(update={"embeddings": "local"}),
            }
        )
        knowledge = KnowledgeService(options=offline.knowledge, store_path=settings.data_dir / "convtests" / "chroma")
        try:
            runtime = await Runtime.from_settings(
                offline,
                chains=TestChains(offline),
                knowledge=knowledge,
                clock=clock,
                observers=observers,
            )
        except BaseException:
            await knowledge.close()
            raise
        try:
            for name in bots:
                await _sync_knowledge(knowledge, runtime.bots.require(name), report)
            yield runtime
        finally:
            await runtime.close(grace=0)


async def _sync_knowledge(knowledge: KnowledgeService, bot: BotConfig, report: Callable[[str], None] | None) -> None:
    folder = knowledge_folder(bot)
    if not bot.knowledge.enabled or not folder.is_dir():
        return
    # Pruned: the store mirrors the folder, so a deleted document can answer neither a test nor an eval.
    summary = await knowledge.ingest(bot.name, [folder], knowledge_set=bot.knowledge.default_set, prune=True)
    if report is not None and summary.changed:
        report(f"knowledge of '{bot.name}' for tests: {summary.describe()}")
