"""`relaybot eval`: how well a bot's intent classifier and retriever do on its labelled sets."""
