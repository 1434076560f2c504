"""Fake servers (WeChat, an OpenAI-compatible upstream) for tests, demos and benchmarks."""
