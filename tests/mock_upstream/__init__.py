"""A real HTTP server that speaks OpenAI Chat Completions and Responses, with fault injection."""
