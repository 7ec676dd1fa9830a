"""Every Redis key layout relaybot uses: where it is written, its type and how long it lives.

All keys start with the prefix (`relaybot`, shown as `P`); `N` is a queue's name (`bus`, or
`outbox:<channel>` for a channel's replies). The modules named here build the keys; this table
is what an operator reads to size, inspect or clean a Redis (and tests/test_redis_keys.py fails
when a module builds a key whose layout is not listed here).

A TTL of None means the key is kept until it is deleted (the queue's streams are trimmed by
acknowledging their entries; opt-outs are kept on purpose). "RELAYBOT_..." names the setting that
sets a TTL.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY = 24 * 3600
WEEK = 7 * DAY


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyLayout:
    pattern: str
    #: STRING, HASH, LIST, SET, ZSET, STREAM, or PUBSUB (a channel, not a stored key)
    type: str
    #: seconds, a setting's name, a description, or None (kept until deleted)
    ttl: int | str | None
    module: str
    what: str


KEYS: tuple[KeyLayout, ...] = (
    # --- queues: the bus and the outboxes (core/queue/redis.py) ---
    KeyLayout(
        pattern="P:q:N",
        type="STREAM",
        ttl=None,
        module="core/queue/redis.py",
        what="queue entries (p partition, t ticket, d payload); acknowledged entries are deleted",
    ),
    KeyLayout(
        pattern="P:q:N:dead",
        type="STREAM",
        ttl=None,
        module="core/queue/redis.py",
        what="dead letters (p, d, attempts, error, failed_at), until replayed",
    ),
    KeyLayout(
        pattern="P:q:N:attempts",
        type="HASH",
        ttl=None,
        module="core/queue/redis.py",
        what="deliveries per entry id (fields removed with their entry)",
    ),
    KeyLayout(
        pattern="P:q:N:errors",
        type="HASH",
        ttl=None,
        module="core/queue/redis.py",
        what="last error per entry id (fields removed with their entry)",
    ),
    KeyLayout(
        pattern="P:q:N:ticket:<partition>",
        type="STRING",
        ttl=WEEK,
        module="core/queue/redis.py",
        what="last ticket handed out in the partition (a conversation); a week after its last use",
    ),
    KeyLayout(
        pattern="P:q:N:done:<partition>",
        type="STRING",
        ttl=WEEK,
        module="core/queue/redis.py",
        what="last ticket handled in the partition",
    ),
    KeyLayout(
        pattern="P:q:N:skipped:<partition>",
        type="SET",
        ttl=WEEK,
        module="core/queue/redis.py",
        what="tickets jumped over and still owed handling",
    ),
    KeyLayout(
        pattern="P:q:N:once:<dedupe key>",
        type="STRING",
        ttl=WEEK,
        module="core/queue/redis.py",
        what="add-at-most-once claim (the bus: `inbound:<envelope dedupe key>`)",
    ),
    KeyLayout(
        pattern="P:q:N:claim:<partition>",
        type="STRING",
        ttl="RELAYBOT_LOCK_TTL_SECONDS (renewed by touch)",
        module="core/queue/redis.py",
        what="the consumer token holding the conversation (its lock)",
    ),
    KeyLayout(
        pattern="P:q:N:progress",
        type="PUBSUB",
        ttl=None,
        module="core/queue/redis.py",
        what="a partition's name each time one of its entries finishes or its claim is given back",
    ),
    # --- sessions and the history read cache (core/stores/redis.py) ---
    KeyLayout(
        pattern="P:session:<session id>",
        type="HASH",
        ttl="RELAYBOT_SESSION_TTL_SECONDS (extended on access)",
        module="core/stores/redis.py",
        what="an active session's fields",
    ),
    KeyLayout(
        pattern="P:session:<session id>:messages",
        type="LIST",
        ttl="RELAYBOT_SESSION_TTL_SECONDS (extended on access)",
        module="core/stores/redis.py",
        what="the session's recent messages (the history window)",
    ),
    KeyLayout(
        pattern="P:cache:<key>",
        type="STRING",
        ttl="RELAYBOT_SESSION_TTL_SECONDS",
        module="core/stores/redis.py",
        what="a cached read of the durable history (`facts:<bot>:<user>`, `summary:<session id>`)",
    ),
    KeyLayout(
        pattern="P:cachegen:<key>",
        type="STRING",
        ttl=WEEK,
        module="core/stores/redis.py",
        what="the cached read's generation, bumped by every write (a stale fill is refused)",
    ),
    # --- dedupe claims (core/dedupe/redis.py) ---
    KeyLayout(
        pattern="P:dedupe:turn:<envelope dedupe key>",
        type="STRING",
        ttl=WEEK,
        module="core/worker.py",
        what="the envelope was answered (a second envelope of the same message is skipped)",
    ),
    KeyLayout(
        pattern="P:dedupe:outbox:<envelope dedupe key>",
        type="STRING",
        ttl=WEEK,
        module="core/delivery/outbox.py",
        what="a reply to the message was handed to the outbox (one reply per message)",
    ),
    # --- rate limits and token budgets (core/ratelimit/redis.py) ---
    KeyLayout(
        pattern="P:rate:<limiter key>",
        type="ZSET",
        ttl=3600,
        module="core/ratelimit/redis.py",
        what="request times of the last hour (`<bot>:<user id>`, `web:ip:<address>`, `web:new-session:<address>`)",
    ),
    KeyLayout(
        pattern="P:tokens:<limiter key>:<day number>",
        type="STRING",
        ttl=2 * DAY,
        module="core/ratelimit/redis.py",
        what="tokens spent that UTC day (`<bot>:<user id>`, and `bot:<bot>` for a bot's total)",
    ),
    # --- fan-out between processes (core/fanout/redis.py) ---
    KeyLayout(
        pattern="P:fanout:<topic>",
        type="PUBSUB",
        ttl=None,
        module="core/fanout/redis.py",
        what="`deliver:<channel>` (replies for the adapters holding the connection), `fragments:<channel>`",
    ),
    # --- delivery records and streamed replies ---
    KeyLayout(
        pattern="P:delivery:<reply id>",
        type="STRING",
        ttl=WEEK,
        module="core/delivery/records/redis.py",
        what="what happened to a reply (JSON: status, attempts, error, the channel's message ids)",
    ),
    KeyLayout(
        pattern="P:stream:<reply key>",
        type="HASH",
        ttl=3600,
        module="core/streams/redis.py",
        what="who shows a streamed reply and where (owner, ref, closed, final)",
    ),
    KeyLayout(
        pattern="P:parts:<reply id>",
        type="LIST",
        ttl=DAY,
        module="core/streams/redis.py",
        what="message ids of the parts of a split reply already sent",
    ),
    # --- LLM chain state ---
    KeyLayout(
        pattern="P:llm:breaker:<provider and model>",
        type="HASH",
        ttl="a cooldown plus forget_after (at least a minute) after the last failure",
        module="core/llm/breaker/redis.py",
        what="circuit breaker state (failures, last_failure, open_until, probing)",
    ),
    KeyLayout(
        pattern="P:llm:cache:<digest>",
        type="STRING",
        ttl="the bot's [models] cache_ttl_seconds",
        module="core/llm/cache/redis.py",
        what="a cached complete answer (JSON: text, provider, model)",
    ),
    # --- human handoff (core/handoff/redis.py; the state itself is in the session's fields) ---
    KeyLayout(
        pattern="P:handoff:open",
        type="ZSET",
        ttl=None,
        module="core/handoff/redis.py",
        what="conversations waiting for or held by a person, scored by when one was asked for",
    ),
    # --- Twilio (channels/twilio/state/redis.py) ---
    KeyLayout(
        pattern="P:twilio:optout",
        type="SET",
        ttl=None,
        module="channels/twilio/state/redis.py",
        what="numbers that texted STOP (until they text START)",
    ),
    KeyLayout(
        pattern="P:twilio:wrote:<address>",
        type="STRING",
        ttl=WEEK,
        module="channels/twilio/state/redis.py",
        what="when a WhatsApp user last wrote (the 24-hour window)",
    ),
    # --- the operator console (core/console/sessions.py) ---
    KeyLayout(
        pattern="P:console:session:<sha256 of the cookie token>",
        type="STRING",
        ttl="RELAYBOT_CONSOLE__SESSION_TTL_SECONDS",
        module="core/console/sessions.py",
        what="an operator's sign-in: JSON {email, csrf, expires_at}",
    ),
    KeyLayout(
        pattern="P:console:failures:<account:EMAIL or ip:ADDRESS>",
        type="STRING",
        ttl="RELAYBOT_CONSOLE__LOCKOUT_MINUTES",
        module="core/console/sessions.py",
        what="failed sign-ins counted in the window that began with the first",
    ),
    KeyLayout(
        pattern="P:console:locked:<account:EMAIL or ip:ADDRESS>",
        type="STRING",
        ttl="RELAYBOT_CONSOLE__LOCKOUT_MINUTES",
        module="core/console/sessions.py",
        what="present while that account or address is locked out of signing in",
    ),
    KeyLayout(
        pattern="P:twilio:status:<reply id>",
        type="HASH",
        ttl=WEEK,
        module="channels/twilio/state/redis.py",
        what="Twilio's latest status per MessageSid sent for the reply",
    ),
    KeyLayout(
        pattern="P:twilio:content:<buttons key>",
        type="STRING",
        ttl=None,
        module="channels/twilio/state/redis.py",
        what="the Content SID made for one set of WhatsApp buttons (until Twilio no longer knows it)",
    ),
)


def namespaces() -> frozenset[str]:
    """The first word after the prefix of every layout ("q", "session", "twilio", ...)."""
    return frozenset(layout.pattern.split(":")[1] for layout in KEYS)
