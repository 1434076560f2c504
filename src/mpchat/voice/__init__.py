"""Voice: recordings in, answers read aloud (docs/voice.md)."""
