"""The web widget: a demo page, the widget script (static/) and its WebSocket.

Modules: channel (the adapter and its protocol), tokens (session tokens), limits (limits at the edge).

The `relaybot.channels` entry point names `channel` itself, so importing a light module of the
package (say its CLI commands) does not import the platform's SDK.
"""
