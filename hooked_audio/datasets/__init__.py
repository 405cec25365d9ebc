"""Benchmark loaders: ``KIND:PATH`` specs to a list of :class:`EvalItem`.

    sakura:DIR                 every SAKURA track found under DIR (DIR/data/<Track>/metadata.csv)
    sakura:DIR:Gender          one track; append :multi for the multi-hop questions (sakura:DIR:Gender:multi)
    mmau:FILE.json             MMAU test-mini (clips relative to the JSON's folder)
    manifest:FILE.jsonl|.csv   a generic manifest (audio, question, answer, optional choices, id)

See :mod:`hooked_audio.datasets.items` for how bad rows are reported (never dropped silently).
"""

from __future__ import annotations

import os

from .items import DatasetError, EvalDataset, EvalItem, Skip
from .manifest import load_manifest
from .mmau import load_mmau
from .sakura import HOPS, TRACKS, load_sakura

KINDS = ("sakura", "mmau", "manifest")

__all__ = ["DatasetError", "EvalDataset", "EvalItem", "Skip", "KINDS", "parse_spec", "load_dataset",
           "load_sakura", "load_mmau", "load_manifest"]


def parse_spec(spec: str) -> tuple[str, str, dict]:
    """``"KIND:PATH[:OPTIONS]"`` -> ``(kind, path, options)``; a bad spec raises ``DatasetError``."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS or not rest:
        raise DatasetError(
            f"dataset {spec!r} is not KIND:PATH with KIND one of {KINDS} "
            "(e.g. sakura:/data/SAKURA, sakura:/data/SAKURA:Gender, mmau:/data/mmau-test-mini.json, manifest:clips.jsonl)"
        )
    options: dict = {}
    if kind == "sakura":
        parts = rest.split(":")
        while len(parts) > 1 and (parts[-1] in TRACKS or parts[-1] in HOPS):
            key = "hop" if parts[-1] in HOPS else "track"
            if key in options:
                raise DatasetError(f"dataset {spec!r} names two {key}s")
            options[key] = parts.pop()
        if len(parts) > 1 and not os.path.exists(":".join(parts)):
            raise DatasetError(f"dataset {spec!r}: {parts[-1]!r} is not a SAKURA track {TRACKS} or hop {HOPS}")
        rest = ":".join(parts)
    return kind, rest, options


def load_dataset(spec: str, strict: bool = False) -> EvalDataset:
    """The dataset a ``KIND:PATH`` spec names (see the module docstring)."""
    kind, path, options = parse_spec(spec)
    if kind == "sakura":
        return load_sakura(path, options.get("track"), options.get("hop", "single"), spec=spec, strict=strict)
    if kind == "mmau":
        return load_mmau(path, spec=spec, strict=strict)
    return load_manifest(path, spec=spec, strict=strict)
