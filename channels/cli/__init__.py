"""The terminal chat (`relaybot chat`): the same pipeline, in a terminal.

Modules: channel (the adapter).

The `relaybot.channels` entry point names `channel` itself, so importing a light module of the
package (say its CLI commands) does not import the platform's SDK.
"""
