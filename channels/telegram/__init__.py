"""Telegram: the Bot API by webhook (or long polling) in, `sendMessage` out.

Modules: channel (the adapter, putting the others together), application (the python-telegram-bot
Application, initialized once), webhook (the route: secret, body limit), polling (getUpdates),
intake (updates to the bus), dedupe (update ids seen recently), typing_indicator ("typing…" until
the answer), inbound (which updates are answered), delivery (replies: parts, streaming, blocked
users), outbound (sending), drafts (streaming by draft), keyboards (buttons), blocks (users who
blocked the bot), files (attachments by file id), cli (`relaybot telegram set-webhook`).

The `relaybot.channels` entry point names `channel` itself, so importing a light module of the
package (say its CLI commands) does not import the platform's SDK.
"""
