"""The chat pipeline: context building, the answer stream, what is stored when."""
