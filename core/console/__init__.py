"""The operator console: accounts, sign-in, the page and its JSON API over the handoff desk (issue 17)."""
