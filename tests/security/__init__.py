"""Security tests: rotation, retention, leaks, isolation, fuzzing, tampering, refusals."""
