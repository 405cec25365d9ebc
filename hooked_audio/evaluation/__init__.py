"""Whole-benchmark evaluation: scoring functions, the resumable batched runner, summaries and plots."""

from .runner import SCORINGS, ResumeError, default_scoring, evaluate, read_results
from .scoring import exact_match, first_token_ids, mmau_match, restricted_choice
from .steer import Steer, SteerError, parse_steer, steering_hooks
from .summary import accuracy, format_table, summarise

__all__ = ["SCORINGS", "ResumeError", "default_scoring", "evaluate", "read_results", "exact_match",
           "first_token_ids", "mmau_match", "restricted_choice", "accuracy", "format_table", "summarise",
           "Steer", "SteerError", "parse_steer", "steering_hooks"]
