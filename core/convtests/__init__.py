"""Conversation tests: YAML files of user turns and expectations, run through the real pipeline (`relaybot test`)."""
