"""Slack: the Events API over HTTP (or Socket Mode) in, `chat.postMessage` out.

Modules: channel (the adapter), inbound (which events are answered), delivery (posting and editing),
users (display names), cli (`relaybot slack manifest`).

The `relaybot.channels` entry point names `channel` itself, so importing a light module of the
package (say its CLI commands) does not import the platform's SDK.
"""
