"""Interpretability methods as hook functions plus thin helpers."""
