"""Storage: the engine, the schema and repository functions (keyword-only, async)."""
