"""relaybot core: the channel-independent engine (envelope, pipeline, stores, bus, LLM, CLI)."""

__version__ = "0.1.0"
