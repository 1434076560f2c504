"""Model providers: the OpenAI-compatible client, the demo model, retries."""
