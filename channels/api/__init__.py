"""The HTTP API: `POST /api/messages` in, signed callbacks out.

Modules: channel (the adapter), targets (which callback addresses are refused), cli (`relaybot api ...`).

The `relaybot.channels` entry point names `channel` itself, so importing a light module of the
package (say its CLI commands) does not import the platform's SDK.
"""
