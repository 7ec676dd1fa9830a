"""SMS and WhatsApp through Twilio: signed webhooks in, the Messages API out.

Modules: channel (the adapter), inbound (the webhook's signature and form), outbound (sending,
segments), state (opt-outs and the WhatsApp 24-hour window).

The `relaybot.channels` entry point names `channel` itself, so importing a light module of the
package (say its CLI commands) does not import the platform's SDK.
"""
