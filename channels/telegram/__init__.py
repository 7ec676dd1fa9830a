"""Telegram: the Bot API by webhook (or long polling) in, `sendMessage` out.

Modules: channel (the adapter), inbound (which updates are answered), outbound (sending), files
(attachments by file id), drafts (streaming by draft), blocks (users who blocked the bot), polling
(getUpdates), cli (`relaybot telegram set-webhook`).

The `relaybot.channels` entry point names `channel` itself, so importing a light module of the
package (say its CLI commands) does not import the platform's SDK.
"""
