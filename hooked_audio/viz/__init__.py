"""Plots (PNG) and offline HTML reports."""
