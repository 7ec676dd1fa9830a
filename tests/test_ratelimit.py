from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from core.pipeline.stages import describe_wait
from core.ratelimit.base import RateLimits
from core.ratelimit.memory import MemoryRateLimiter
from core.tokens import estimate_tokens


class Clock:
    """Seconds since the epoch that the test sets, as the `core.clock.Clock` the limiter reads."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.seconds, UTC)


async def test_per_minute_limit_says_when_the_oldest_message_leaves_the_window() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock=clock)
    limits = RateLimits(per_minute=3, per_hour=100)
    for _ in range(3):
        assert (await limiter.hit("u", limits)).allowed
        clock.seconds += 10
    decision = await limiter.hit("u", limits)
    assert not decision.allowed
    assert decision.window == "minute"
    assert decision.retry_after == pytest.approx(30.0)  # first hit at 1000, now 1030
    clock.seconds += 30.01
    assert (await limiter.hit("u", limits)).allowed


async def test_rejected_messages_do_not_extend_the_wait() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock=clock)
    limits = RateLimits(per_minute=1, per_hour=100)
    assert (await limiter.hit("u", limits)).allowed
    for _ in range(5):
        clock.seconds += 5
        assert not (await limiter.hit("u", limits)).allowed
    clock.seconds = 1060.01
    assert (await limiter.hit("u", limits)).allowed


async def test_hour_limit_and_users_are_independent() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock=clock)
    limits = RateLimits(per_minute=100, per_hour=2)
    assert (await limiter.hit("a", limits)).allowed
    clock.seconds += 120
    assert (await limiter.hit("a", limits)).allowed
    clock.seconds += 120
    decision = await limiter.hit("a", limits)
    assert not decision.allowed and decision.window == "hour"
    assert decision.retry_after == pytest.approx(3600 - 240)
    assert (await limiter.hit("b", limits)).allowed


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(2, "a few seconds"), (31.2, "about 35 seconds"), (60, "about 60 seconds"), (3360, "about 56 minutes")],
)
def test_wait_is_described_for_people(seconds: float, text: str) -> None:
    assert describe_wait(seconds) == text


def test_the_offline_token_estimate_grows_with_the_text() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("Hello, world!") == 5  # two words (1.3 each, rounded) and two marks
    short = estimate_tokens("How do I reset my password?")
    assert estimate_tokens("How do I reset my password? " * 10) > 9 * short
    assert estimate_tokens("internationalization") > estimate_tokens("intern")


async def test_decisions_match_a_plain_count_of_the_windows_over_a_long_random_stream() -> None:
    """The limiter keeps the last minute's hits apart from the hour's; its decisions and waits must
    be those of counting every accepted hit in each window, over thousands of hits."""
    rng = random.Random(13)
    clock = Clock()
    limiter = MemoryRateLimiter(clock=clock)
    limits = RateLimits(per_minute=8, per_hour=250)
    accepted: list[float] = []
    refused = {"minute": 0, "hour": 0}
    for _ in range(5000):
        clock.seconds += rng.choice([0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 7.0, 30.0, 61.0])
        now = clock.seconds
        in_hour = [t for t in accepted if t > now - 3600]
        in_minute = [t for t in in_hour if t > now - 60]
        decision = await limiter.hit("office-proxy", limits)
        if len(in_hour) >= limits.per_hour:
            assert (decision.allowed, decision.window) == (False, "hour")
            assert decision.retry_after == pytest.approx(in_hour[-limits.per_hour] + 3600 - now)
        elif len(in_minute) >= limits.per_minute:
            assert (decision.allowed, decision.window) == (False, "minute")
            assert decision.retry_after == pytest.approx(in_minute[0] + 60 - now)
        else:
            assert decision.allowed
            accepted.append(now)
            continue
        refused[decision.window] += 1
    # The stream reached both limits many times, so both branches were checked.
    assert refused["minute"] > 100 and refused["hour"] > 100, refused
