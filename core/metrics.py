"""Prometheus metrics, one registry per process (served at GET /metrics).

Turn metrics are recorded by a closing pipeline stage, delivery and dead-letter metrics where they
happen, and queue depth and lag are read from the queues when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from core.queue.base import OrderedQueue

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.turns = Counter(
            "relaybot_turns",
            "Turns, by outcome (answered, fallback, rate_limited, token_limit; held: no reply, a person has it)",
            ["bot", "channel", "outcome"],
            registry=r,
        )
        self.turn_latency = Histogram(
            "relaybot_turn_latency_seconds",
            "From taking a message off the bus to its reply being stored",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "relaybot_time_to_first_token_seconds",
            "From asking the model to its first token",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.provider_errors = Counter(
            "relaybot_provider_errors",
            "Failed LLM attempts, by error class",
            ["provider", "model", "error"],
            registry=r,
        )
        self.fallbacks = Counter(
            "relaybot_fallbacks", "Turns answered by a fallback step or the static message", ["bot"], registry=r
        )
        self.rate_limited = Counter(
            "relaybot_rate_limited", "Messages refused by a rate limit, by window", ["bot", "window"], registry=r
        )
        self.tokens = Counter("relaybot_tokens", "LLM tokens, by direction", ["bot", "direction"], registry=r)
        self.handoffs = Counter(
            "relaybot_handoffs",
            "Handoff transitions (requested, taken, handed_back, closed, timed_out), by who caused them",
            ["bot", "transition", "cause"],
            registry=r,
        )
        self.deliveries = Counter(
            "relaybot_deliveries", "Replies handed to a channel, by final status", ["channel", "status"], registry=r
        )
        self.delivery_retries = Counter(
            "relaybot_delivery_retries", "Delivery attempts retried (429, 5xx, timeouts)", ["channel"], registry=r
        )
        self.dead_letters = Counter("relaybot_dead_letters", "Entries moved to the dead letters", ["queue"], registry=r)
        self.queue_pending = Gauge(
            "relaybot_queue_pending", "Entries added and not yet acknowledged", ["queue"], registry=r
        )
        self.queue_lag = Gauge(
            "relaybot_queue_lag_seconds", "Age of the oldest entry still waiting", ["queue"], registry=r
        )

    def count_redis_round_trips(self, read: Callable[[], int]) -> None:
        """Publish `read()` (the process's requests to Redis so far) as relaybot_redis_round_trips_total."""
        self.registry.register(
            _Total(
                "relaybot_redis_round_trips", "Requests sent to Redis (commands, pipelines and scripts, one each)", read
            )
        )

    async def render(self, queues: Mapping[str, OrderedQueue]) -> bytes:
        for name, queue in queues.items():
            self.queue_pending.labels(name).set(await queue.pending())
            self.queue_lag.labels(name).set(await queue.lag())
        return generate_latest(self.registry)


class _Total(Collector):
    """A counter whose total is kept elsewhere and read when scraped."""

    def __init__(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._read())
