"""Shared building blocks; a model family chooses among them through its config."""
