"""The handoff state machine (core/handoff) on each session backend: transitions, the race to take a
conversation, timeouts, the queue, events across processes, and a person's reply delivered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from core.bots import BotConfig, BotRegistry
from core.delivery.outbox import InlineOutbox
from core.delivery.records.memory import MemoryDeliveryRecords
from core.delivery.sender import ReplySender
from core.fanout.base import Fanout
from core.fanout.memory import MemoryFanout
from core.fanout.redis import RedisFanout
from core.handoff import fields as handoff_fields
from core.handoff.desk import ConversationNotFound, DeskEvent, HandoffConflict, HandoffState, NotHeld
from core.handoff.events import DeskEventHub
from core.handoff.index import HandoffIndex, MemoryHandoffIndex
from core.handoff.redis import RedisHandoffIndex
from core.handoff.service import SessionHandoffDesk
from core.metrics import Metrics
from core.stores.base import Session, SessionStore
from core.stores.memory import MemoryHistoryStore, MemorySessionStore
from core.stores.redis import RedisSessionStore
from tests.support.recording_channel import RecordingChannel

SESSION = "support:api:conv-1"


class _Clock:
    """The test's time, held in a one-item list the test moves (a `core.clock.Clock`)."""

    def __init__(self, now: list[datetime]) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now[0]


@dataclass
class Process:
    """One process's view: its own desk and stores over what the backend shares."""

    desk: SessionHandoffDesk
    sessions: SessionStore
    channel: RecordingChannel
    metrics: Metrics


@dataclass
class Backend:
    new_process: Callable[[], Process]
    history: MemoryHistoryStore
    clock: list[datetime]


def _bots() -> BotRegistry:
    bot = BotConfig.model_validate({"name": "support", "handoff": {"timeout_seconds": 60}})
    return BotRegistry({"support": bot}, default="support")


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    history = MemoryHistoryStore()
    clock = [datetime(2026, 1, 5, 9, 0, tzinfo=UTC)]
    clients: list[aioredis.Redis] = []
    fanouts: list[Fanout] = []
    shared: dict[str, object] = {}

    def new_process() -> Process:
        sessions: SessionStore
        index: HandoffIndex
        fanout: Fanout
        if request.param == "memory":
            # One process: the same stores and fan-out for every desk.
            sessions = shared.setdefault("sessions", MemorySessionStore(ttl_seconds=3600))  # type: ignore[assignment]
            index = shared.setdefault("index", MemoryHandoffIndex())  # type: ignore[assignment]
            fanout = shared.setdefault("fanout", MemoryFanout())  # type: ignore[assignment]
        else:
            client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
            clients.append(client)
            sessions, index, fanout = RedisSessionStore(client), RedisHandoffIndex(client), RedisFanout(client)
            fanouts.append(fanout)
        channel = RecordingChannel("api")
        metrics = Metrics()
        outbox = InlineOutbox({"api": channel}, ReplySender({"api": channel}, MemoryDeliveryRecords()))
        desk = SessionHandoffDesk(
            sessions=sessions,
            history=history,
            index=index,
            events=DeskEventHub(fanout),
            outbox=outbox,
            bots=_bots(),
            metrics=metrics,
            clock=_Clock(clock),
        )
        return Process(desk=desk, sessions=sessions, channel=channel, metrics=metrics)

    yield Backend(new_process=new_process, history=history, clock=clock)
    for fanout in fanouts:
        await fanout.close()
    for client in clients:
        await client.aclose()


async def open_conversation(sessions: SessionStore, session_id: str = SESSION) -> None:
    await sessions.create(
        Session(
            session_id=session_id,
            bot="support",
            channel="api",
            conversation_id="conv-1",
            user_id="api:alice",
            fields={handoff_fields.REPLY_TO: "https://example.test/callback"},
        )
    )


async def test_a_conversation_goes_to_a_person_and_back(backend: Backend) -> None:
    p = backend.new_process()
    await open_conversation(p.sessions)
    assert await p.desk.state(SESSION) is HandoffState.BOT
    assert await p.desk.state("support:api:nobody") is HandoffState.BOT

    with capture_logs() as logs:
        assert await p.desk.request(SESSION, cause="user", reason="wants a refund")
        assert not await p.desk.request(SESSION, cause="model")  # already asked: nothing changes
    assert await p.desk.state(SESSION) is HandoffState.PENDING_HUMAN
    (waiting,) = await p.desk.queue()
    assert waiting.state is HandoffState.PENDING_HUMAN and waiting.reason == "wants a refund"
    assert waiting.requested_at == backend.clock[0] and waiting.user_id == "api:alice"
    assert await p.desk.queue(["another-bot"]) == []

    view = await p.desk.take(SESSION, "ana@example.com")
    assert view.state is HandoffState.HUMAN and view.operator == "ana@example.com"
    assert view.requested_at == backend.clock[0]  # still when the user asked
    message = await p.desk.reply(SESSION, "ana@example.com", "Hi, Ana here. Let me look at your refund.")
    assert message.author == "ana@example.com" and message.seq is not None
    (sent,) = await p.channel.wait_for(1)
    assert sent.text == "Hi, Ana here. Let me look at your refund."
    assert sent.reply_to == "https://example.test/callback" and sent.session_id == SESSION

    await p.desk.hand_back(SESSION, "ana@example.com")
    assert await p.desk.state(SESSION) is HandoffState.BOT
    assert await p.desk.queue() == []

    transcript = await p.desk.transcript(SESSION)
    assert [(m.author, m.text) for m in transcript] == [
        ("system", "A person was asked for: wants a refund"),
        ("system", "ana@example.com took over the conversation"),
        ("ana@example.com", "Hi, Ana here. Let me look at your refund."),
        ("system", "ana@example.com handed the conversation back to the bot"),
    ]
    # The operator's reply is in the window the model reads when the bot answers again.
    window = await p.sessions.recent(SESSION, 10)
    assert [m.content for m in window] == ["Hi, Ana here. Let me look at your refund."]
    assert [e["transition"] for e in logs if e["event"] == "handoff"] == ["requested"]
    counted = p.metrics.handoffs.labels("support", "taken", "operator")._value.get()
    assert counted == 1


async def test_only_the_holder_may_reply_or_hand_back(backend: Backend) -> None:
    p = backend.new_process()
    await open_conversation(p.sessions)
    with pytest.raises(NotHeld, match="take it first"):
        await p.desk.reply(SESSION, "ana@example.com", "hello")
    await p.desk.request(SESSION, cause="handler")
    await p.desk.take(SESSION, "ana@example.com")
    with pytest.raises(NotHeld, match=r"ana@example\.com does"):
        await p.desk.reply(SESSION, "bo@example.com", "hello")
    with pytest.raises(NotHeld):
        await p.desk.hand_back(SESSION, "bo@example.com")
    with pytest.raises(HandoffConflict, match=r"ana@example\.com already holds"):
        await p.desk.take(SESSION, "bo@example.com")
    again = await p.desk.take(SESSION, "ana@example.com")  # taking what one holds is harmless
    assert again.operator == "ana@example.com"
    with pytest.raises(ConversationNotFound):
        await p.desk.take("support:api:gone", "ana@example.com")
    with pytest.raises(ConversationNotFound):
        await p.desk.request("support:api:gone", cause="user")
    assert p.channel.replies == []


async def test_of_two_operators_racing_to_take_a_conversation_exactly_one_wins(backend: Backend) -> None:
    first, second = backend.new_process(), backend.new_process()
    for n in range(20):
        session_id = f"support:api:race-{n}"
        await open_conversation(first.sessions, session_id)
        await first.desk.request(session_id, cause="user")
        outcomes = await asyncio.gather(
            first.desk.take(session_id, "ana@example.com"),
            second.desk.take(session_id, "bo@example.com"),
            return_exceptions=True,
        )
        won = [o for o in outcomes if not isinstance(o, BaseException)]
        lost = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        winner = won[0].operator
        assert winner is not None
        # The loser is told who has it (whether it saw the winner's take or lost the swap to it).
        assert isinstance(lost[0], HandoffConflict) and winner in str(lost[0])
        session = await first.sessions.load(session_id)
        assert session is not None and session.fields[handoff_fields.OPERATOR] == winner


async def test_a_request_nobody_takes_times_out_the_user_is_told_and_the_bot_resumes(backend: Backend) -> None:
    first, second = backend.new_process(), backend.new_process()
    await open_conversation(first.sessions)
    await first.desk.request(SESSION, cause="user")
    assert await first.desk.expire_waiting(backend.clock[0] + timedelta(seconds=59)) == []
    later = backend.clock[0] + timedelta(seconds=61)
    # Two workers sweep at once: the conversation moves once, and the user is told once.
    moved = await asyncio.gather(first.desk.expire_waiting(later), second.desk.expire_waiting(later))
    assert sorted(moved, key=len) == [[], [SESSION]]
    assert await first.desk.state(SESSION) is HandoffState.BOT
    told = first.channel.replies + second.channel.replies
    assert len(told) == 1 and "nobody from the team is free" in told[0].text.lower()
    transcript = await first.desk.transcript(SESSION)
    assert transcript[-2].text.startswith("Nobody took the conversation in time")
    assert transcript[-1].author == "bot"
    assert await first.desk.queue() == []
    # A conversation an operator holds does not time out.
    await first.desk.request(SESSION, cause="user")
    await first.desk.take(SESSION, "ana@example.com")
    assert await first.desk.expire_waiting(later + timedelta(hours=5)) == []
    assert await first.desk.state(SESSION) is HandoffState.HUMAN


async def test_desk_events_reach_every_process(backend: Backend) -> None:
    worker, console = backend.new_process(), backend.new_process()
    await open_conversation(worker.sessions)
    events = console.desk.events()
    await console.desk._events.start()  # the console subscribes when it starts serving
    seen: list[DeskEvent] = []

    async def read(n: int) -> None:
        async for event in events:
            seen.append(event)
            if len(seen) == n:
                return

    reading = asyncio.create_task(read(4))
    await worker.desk.request(SESSION, cause="user", reason="billing")
    await worker.desk.take(SESSION, "ana@example.com")
    await worker.desk.reply(SESSION, "ana@example.com", "Hello!")
    await worker.desk.hand_back(SESSION, "ana@example.com", cause="closed")
    await asyncio.wait_for(reading, 5)
    assert [e.kind for e in seen] == ["requested", "taken", "message", "closed"]
    assert seen[0].conversation is not None and seen[0].conversation.reason == "billing"
    assert seen[2].message is not None and seen[2].message.text == "Hello!"
    assert seen[3].conversation is not None and seen[3].conversation.state is HandoffState.BOT
    await events.aclose()  # type: ignore[attr-defined]


async def test_an_operator_may_take_a_conversation_the_bot_holds(backend: Backend) -> None:
    p = backend.new_process()
    await open_conversation(p.sessions)
    view = await p.desk.take(SESSION, "ana@example.com")
    assert view.state is HandoffState.HUMAN and view.requested_at == backend.clock[0]
    assert [v.session_id for v in await p.desk.queue()] == [SESSION]
