"""Where log lines go: written to stderr by a thread of their own, never by the event loop.

structlog's async methods (`await log.ainfo(...)`) keep a slow stderr off the event loop by running
each call, rendering included, on the default thread pool: a hop there and back for every line,
about 35 µs of CPU beside 19 µs of actual work, and with the turn's line that was a fifth of the
embedded widget's CPU per message at the default level (INFO). Here a line is rendered where it is
logged and left in a buffer that one writer thread empties every 50 ms, so logging never waits and
never blocks the loop: if stderr stops taking lines (a stuck log collector), lines beyond `max_pending` are
dropped and counted, and a line saying how many is written once stderr moves again.
"""

from __future__ import annotations

import atexit
import threading
from collections import deque
from typing import Any, TextIO

import structlog

__all__ = ["LineSink", "hop_free"]


class LineSink:
    """A structlog logger (`msg`, `info`, … take the rendered line) written out by one thread.

    A line is appended to a buffer (no lock, no wake-up: a deque's append is atomic) and the
    writer thread writes whatever has gathered every `interval` seconds, in one write.
    """

    def __init__(self, file: TextIO, *, max_pending: int = 10_000, interval: float = 0.05) -> None:
        self._file = file
        self._max_pending = max_pending
        self._interval = interval
        self._lines: deque[str] = deque()
        self._dropped = 0
        self._dropping = threading.Lock()  # loggers on several threads may drop at once
        self._writing = threading.Lock()  # the writer thread, or a caller of flush()
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_lines, name="relaybot-log-writer", daemon=True)
        self._writer.start()
        atexit.register(self.close)

    def msg(self, message: str) -> None:
        if len(self._lines) >= self._max_pending:
            with self._dropping:
                self._dropped += 1
            return
        self._lines.append(message)

    debug = info = warning = warn = error = critical = exception = fatal = failure = err = log = msg

    def flush(self) -> None:
        """Write every line logged so far, now (tests, shutdown); waits for a write in progress."""
        self._write_pending()

    def close(self) -> None:
        self._stop.set()
        if self._writer.is_alive() and self._writer is not threading.current_thread():
            self._writer.join(timeout=5.0)
        atexit.unregister(self.close)

    def _write_lines(self) -> None:
        while not self._stop.wait(self._interval):
            self._write_pending()
        self._write_pending()

    def _write_pending(self) -> None:
        with self._writing:
            lines: list[str] = []
            while self._lines:
                lines.append(self._lines.popleft())
            with self._dropping:
                dropped, self._dropped = self._dropped, 0
            if dropped:
                lines.append(f"relaybot: {dropped} log lines dropped: stderr was not taking them")
            if not lines:
                return
            try:
                self._file.write("\n".join(lines) + "\n")
                self._file.flush()
            except (OSError, ValueError):
                pass  # stderr closed or gone: nothing left to tell, and the bot must go on


def hop_free(base: Any) -> Any:
    """`base` (a class from `structlog.make_filtering_bound_logger`) whose async methods log
    right away: the sink never blocks, so they need no trip to the thread pool. A level the
    filter turns off stays a no-op in both forms."""

    class HopFreeBoundLogger(base):  # type: ignore[misc]
        async def adebug(self, event: str, *args: Any, **kw: Any) -> Any:
            return self.debug(event, *args, **kw)

        async def ainfo(self, event: str, *args: Any, **kw: Any) -> Any:
            return self.info(event, *args, **kw)

        async def awarning(self, event: str, *args: Any, **kw: Any) -> Any:
            return self.warning(event, *args, **kw)

        async def aerror(self, event: str, *args: Any, **kw: Any) -> Any:
            return self.error(event, *args, **kw)

        async def acritical(self, event: str, *args: Any, **kw: Any) -> Any:
            return self.critical(event, *args, **kw)

        async def afatal(self, event: str, *args: Any, **kw: Any) -> Any:
            return self.fatal(event, *args, **kw)

        async def aexception(self, event: str, *args: Any, **kw: Any) -> Any:
            return self.exception(event, *args, **kw)

        async def alog(self, level: int, event: str, *args: Any, **kw: Any) -> Any:
            return self.log(level, event, *args, **kw)

    return HopFreeBoundLogger


class _SinkFactory:
    """structlog's logger factory: every logger writes through the one sink."""

    def __init__(self, sink: LineSink) -> None:
        self.sink = sink

    def __call__(self, *args: Any) -> LineSink:
        return self.sink


def configure_sink(processors: list[structlog.typing.Processor], level: int, file: TextIO) -> LineSink:
    """structlog configured to render with `processors` and write through a new sink on `file`
    (structlog's configuration is process-wide: the sink configured before is closed)."""
    previous = structlog.get_config().get("logger_factory")
    if isinstance(previous, _SinkFactory):
        previous.sink.close()
    sink = LineSink(file)
    structlog.configure(
        processors=processors,
        wrapper_class=hop_free(structlog.make_filtering_bound_logger(level)),
        logger_factory=_SinkFactory(sink),
        # A process configures logging once, at start (`relaybot` commands): a logger is built on
        # its first use, not again on every call (1-2% of a message's CPU at INFO).
        cache_logger_on_first_use=True,
    )
    return sink
