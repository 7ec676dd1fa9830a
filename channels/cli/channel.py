"""A terminal channel: talk to a bot from a shell with `relaybot chat`.

It goes through the same bus, worker, pipeline and outbox as every other channel, so what you
see here is what a Slack or web user would get. On a terminal, replies are rendered Markdown (rich),
wrapped to the terminal's width; piped, they stay plain text with a `bot> ` prefix, for scripts.

Buttons are shown as numbered choices under the reply ("[1] Billing  [2] A problem  [3] Cancel",
a card as text above them); typing a number or a label (any case) is the click on that button of
the conversation's newest reply, as on SMS (channels.choices).
"""

from __future__ import annotations

import asyncio
import getpass
import itertools
import sys
from pathlib import Path
from typing import TextIO

from aiohttp import web
from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from channels.choices import card_text, choice_for, offered
from core.actions import MAX_LABEL_CHARS, Action, Button
from core.channel import Capabilities, ChannelContext, DeliveryResult
from core.envelope import Envelope, Reply, session_id_for
from core.offers import last_offer
from core.settings import Settings

QUIT_WORDS = frozenset({"/quit", "/exit", ":q"})
#: the width of "bot> ": the choices line up under the reply's text
INDENT = "     "


class TerminalChannel:
    channel_names = ("cli",)
    capabilities = Capabilities(max_message_length=100_000, markdown="plain", can_stream=True)

    def __init__(
        self,
        ctx: ChannelContext,
        *,
        out: TextIO | None = None,
        user: str | None = None,
        console: Console | None = None,
    ) -> None:
        self._ctx = ctx
        self._out = out or sys.stdout
        self._user = user or getpass.getuser()
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        # rich decides whether `out` is a terminal (and its width, re-read on every render, so a resized
        # window wraps to its new width).
        self._console = console or Console(file=self._out, highlight=False, soft_wrap=False)
        self._live: dict[str, tuple[Live, list[str]]] = {}

    @staticmethod
    def is_configured(settings: Settings) -> bool:
        # Interactive only: `relaybot chat` adds it by hand; `relaybot run` never starts it.
        return False

    def register(self, app: web.Application) -> None:
        """No routes: the terminal is not an HTTP channel."""

    async def ask(self, text: str, *, bot: str) -> Reply:
        """Send one line as the terminal user and wait for the bot's reply."""
        message_id = f"{next(self._ids)}-{asyncio.get_running_loop().time():.6f}"
        conversation = f"terminal:{self._user}"
        text, action = await self._choice(bot, conversation, text)
        envelope = Envelope.create(
            bot=bot,
            channel="cli",
            channel_message_id=message_id,
            conversation_id=conversation,
            user_id=f"cli:{self._user}",
            user_name=self._user,
            text=text,
            action=action,
        )
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = waiter
        try:
            if not await self._ctx.bus.publish(envelope):
                raise RuntimeError("the terminal sent the same message id twice")
            return await waiter
        finally:
            self._waiting.pop(message_id, None)

    async def _choice(self, bot: str, conversation: str, text: str) -> tuple[str, Action | None]:
        """A typed number or label of the newest reply's choices is the click on that button."""
        if len(text) > MAX_LABEL_CHARS + 5:
            return text, None  # not a choice: no history read for an ordinary message
        offer = await last_offer(self._ctx.history, session_id_for(bot, "cli", conversation))
        button = choice_for(text, offer.buttons)
        if button is None:
            return text, None
        return button.label, offer.click(button)

    async def interact(self, *, bot: str, history_file: Path | None = None) -> None:
        """A read-eval-print loop on stdin/stdout with readline history when there is a terminal."""
        interactive = sys.stdin.isatty()
        if interactive:
            _enable_readline(history_file)
            display = self._ctx.bots.require(bot).display_name
            self._out.write(f"Chatting with {display}. Type /quit or press Ctrl-D to leave.\n")
        while True:
            try:
                line = await asyncio.to_thread(input, "you> " if interactive else "")
            except EOFError:
                if interactive:
                    self._out.write("\n")  # Ctrl-D: leave the shell's prompt on a line of its own
                    self._out.flush()
                break
            if line.strip() in QUIT_WORDS:
                break
            if not line.strip():
                continue
            await self.ask(line, bot=bot)
        if interactive and history_file is not None:
            _save_readline(history_file)

    async def deliver(self, reply: Reply) -> DeliveryResult:
        key = reply.in_reply_to or ""
        if self._console.is_terminal:
            self._render(key, reply)
        else:
            self._write_plain(reply)
        waiter = self._waiting.get(key)
        if reply.final and waiter is not None and not waiter.done():
            waiter.set_result(reply)
        return DeliveryResult(delivered=True, channel_message_ids=(str(reply.seq),) if reply.final else ())

    def _render(self, key: str, reply: Reply) -> None:
        """Markdown on a terminal; a streamed reply is redrawn in place as it grows."""
        if reply.final and key not in self._live:
            self._console.print(_bubble(_with_card(reply)))
            self._print_choices(reply)
            return
        if key not in self._live:
            live = Live(console=self._console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
            live.start()
            self._live[key] = (live, [])
        live, pieces = self._live[key]
        if reply.final:
            live.update(_bubble(_with_card(reply)), refresh=True)
            live.stop()
            del self._live[key]
            self._print_choices(reply)
            return
        pieces.append(reply.text)
        live.update(_bubble("".join(pieces)), refresh=True)

    def _write_plain(self, reply: Reply) -> None:
        # Piped, a reply is written once, whole: the final text is not always the streamed pieces
        # joined (its citations are renumbered and its sources listed under it at the end), and a
        # pipe cannot redraw what it already wrote.
        if not reply.final:
            return
        self._out.write(f"bot> {_with_card(reply)}\n")
        if buttons := offered(reply):
            self._out.write(f"{INDENT}{choices_line(buttons)}\n")
        self._out.flush()

    def _print_choices(self, reply: Reply) -> None:
        if buttons := offered(reply):
            for line in choices_lines(buttons, self._console.width - len(INDENT)):
                self._console.print(Text(INDENT + line, style="bold"), overflow="fold")

    async def start(self) -> None:
        """Nothing to start: messages arrive through routes."""

    async def close(self) -> None:
        for live, _ in self._live.values():
            live.stop()
        self._live.clear()
        for waiter in self._waiting.values():
            waiter.cancel()


def choices_line(buttons: tuple[Button, ...]) -> str:
    """ "[1] Billing  [2] A problem  [3] Cancel": what to type to choose (the number or the label)."""
    return "  ".join(f"[{n}] {b.label}" for n, b in enumerate(buttons, start=1))


def choices_lines(buttons: tuple[Button, ...], width: int) -> list[str]:
    """The choices line wrapped to `width` between choices, never inside one ("[3] Cancel" stays whole)."""
    lines: list[str] = []
    for n, button in enumerate(buttons, start=1):
        choice = f"[{n}] {button.label}"
        if lines and cell_len(lines[-1]) + 2 + cell_len(choice) <= width:
            lines[-1] += "  " + choice
        else:
            lines.append(choice)
    return lines


def _with_card(reply: Reply) -> str:
    """The reply's Markdown, its card (if any) as text under it."""
    return reply.text if reply.card is None else f"{reply.text}\n\n{card_text(reply.card)}"


def _bubble(markdown: str) -> RenderableType:
    """`bot>` and the reply as Markdown beside it: wrapped lines hang under the text, not the label."""
    grid = Table.grid()
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_row(Text("bot> ", style="bold cyan"), Markdown(markdown))
    return grid


def _enable_readline(history_file: Path | None) -> None:
    try:
        import readline
    except ImportError:  # not on every platform; the chat works without it
        return
    if history_file is not None and history_file.exists():
        readline.read_history_file(history_file)
    readline.set_history_length(1000)


def _save_readline(history_file: Path) -> None:
    try:
        import readline
    except ImportError:
        return
    history_file.parent.mkdir(parents=True, exist_ok=True)
    readline.write_history_file(history_file)
