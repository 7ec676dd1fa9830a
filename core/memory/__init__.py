"""Memory: facts users state about themselves, and a running summary of long conversations.

`facts` (local extractor), `summary` (window rule, fold plan, extractive summarizer), `llm` (the
same through the bot's model chain), `commands` ("what do you remember", "forget ..."),
`context` (what goes into the system message) and `stages` (the pipeline stages).
"""
