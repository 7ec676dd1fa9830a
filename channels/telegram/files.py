"""Telegram attachments as token-free references, resolved to their download only when used.

Every Bot API download URL contains the bot token (`https://api.telegram.org/file/bot<TOKEN>/<path>`),
while envelopes travel the bus, land in dead letters and are printed by `relaybot dead-letters list`.
So an attachment carries only `telegram-file:<file_id>`: a file id is durable and fetches nothing
without the token. Whoever needs the file asks the channel (`TelegramChannel.file_url` or
`.download`), which calls getFile with its own bot at that moment; the URL it gives is used at once
and never stored or logged (Telegram keeps it valid for at least an hour).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from telegram import Bot, File
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError, TimedOut

from channels.telegram.inbound import FileRef
from core.envelope import Attachment
from core.errors import AttachmentUnavailable

#: the scheme of an attachment's `url` for a file sent on Telegram: `telegram-file:FILE_ID`
FILE_ID_SCHEME = "telegram-file:"
_TOKEN_MASK = "<bot token>"


def attachment_of(ref: FileRef) -> Attachment:
    """The envelope's attachment for a file the user sent: its reference, never its download URL."""
    return Attachment(url=f"{FILE_ID_SCHEME}{ref.file_id}", mime_type=ref.mime_type, name=ref.name, size=ref.size)


def file_id_of(attachment: Attachment) -> str:
    """The Bot API file id an attachment refers to; AttachmentUnavailable if it is not a Telegram one."""
    scheme, colon, file_id = attachment.url.partition(":")
    if f"{scheme}{colon}" != FILE_ID_SCHEME or not file_id:
        # Only the scheme is quoted: an envelope written before file ids were kept holds a download
        # URL with the bot token in it, which must not travel on in an error message.
        raise AttachmentUnavailable(
            f"not a Telegram file reference (scheme {scheme!r}): expected {FILE_ID_SCHEME}FILE_ID, as the "
            "Telegram channel records attachments; a download URL from an older envelope has expired",
            retryable=False,
        )
    return file_id


class TelegramFiles:
    """getFile and downloads for attachment references, with errors in relaybot's vocabulary."""

    def __init__(self, bot: Callable[[], Awaitable[Bot]], *, token: str, timeout: float) -> None:
        self._bot = bot
        self._token = token  # only to clear it from error messages
        self._timeout = timeout

    async def url(self, attachment: Attachment) -> str:
        """A download URL for the attachment. It contains the bot token: use it now, never keep or log it."""
        file = await self._file(attachment)
        assert file.file_path is not None  # checked in _file
        return file.file_path

    async def download(self, attachment: Attachment) -> bytes:
        """The attachment's bytes (the Bot API serves files up to 20 MB)."""
        file = await self._file(attachment)
        try:
            return bytes(await file.download_as_bytearray())
        except TelegramError as exc:
            raise _unavailable("the file download", exc, self._token) from exc

    async def _file(self, attachment: Attachment) -> File:
        file_id = file_id_of(attachment)
        try:
            bot = await self._bot()
        except TelegramError as exc:  # getMe on first use: the API is unreachable or the token wrong
            raise _unavailable("getMe", exc, self._token) from exc
        try:
            file = await asyncio.wait_for(bot.get_file(file_id), self._timeout)
        except TimeoutError as exc:
            raise AttachmentUnavailable(
                f"Telegram did not answer getFile within {self._timeout:g}s "
                "(RELAYBOT_TELEGRAM__FILE_TIMEOUT_SECONDS); try again",
                retryable=True,
            ) from exc
        except TelegramError as exc:
            raise _unavailable("getFile", exc, self._token) from exc
        if not file.file_path:
            raise AttachmentUnavailable(
                "Telegram gave no download path for the file: it cannot be fetched through the Bot API",
                retryable=False,
            )
        return file


def _unavailable(what: str, exc: TelegramError, token: str) -> AttachmentUnavailable:
    """The error for a failed Bot API request, its text cleared of the token (an HTTP library's
    message can quote the URL, and every Bot API URL contains it)."""
    detail = exc.message.replace(token, _TOKEN_MASK) if token else exc.message
    if isinstance(exc, RetryAfter):
        wait = exc.retry_after.total_seconds() if isinstance(exc.retry_after, timedelta) else float(exc.retry_after)
        return AttachmentUnavailable(
            f"Telegram flood limit on {what}: retry in {wait:g}s", retryable=True, retry_after=wait
        )
    if isinstance(exc, BadRequest):
        return AttachmentUnavailable(
            f"Telegram refused {what}: {detail} (file ids belong to one bot: a file received under "
            "another TELEGRAM_BOT_TOKEN cannot be fetched with this one; files over 20 MB cannot be fetched)",
            retryable=False,
        )
    if isinstance(exc, InvalidToken | Forbidden):
        return AttachmentUnavailable(
            f"Telegram refused {what}: {detail} (check TELEGRAM_BOT_TOKEN; a download link is refused "
            "once it has expired, so resolve the reference again)",
            retryable=False,
        )
    if isinstance(exc, TimedOut):
        return AttachmentUnavailable(f"Telegram did not answer {what} in time; try again", retryable=True)
    return AttachmentUnavailable(f"Telegram could not be reached for {what}: {detail}", retryable=True)
