"""Toy model organism: a tiny Qwen2-Audio trained on synthetic audio question answering.

`signals` synthesizes audio, `tasks` turns it into (clip, question, answer) samples, `tokenizer` builds
the word-level tokenizer, `train` trains and writes `checkpoint/`, `evaluate` measures per-task accuracy
and text dominance (how often a wrong text hint beats the audio).
"""
