"""The edge: the OpenAI-compatible HTTP front door (Chat Completions and Responses)."""
