"""Configurations of real checkpoints (HF ``config.json`` fields), one JSON file per checkpoint.

They let the library build a real model's skeleton (on the meta device: no weights, no download) to
check dimensions, hook names and parameter counts offline. Each file's ``_provenance`` says which
values were checked and against what.
"""

from __future__ import annotations

import json
from importlib import resources


def available() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".json"))


def load(name: str) -> dict:
    """The HF config dict of a checkpoint, by file stem (e.g. ``qwen2-audio-7b-instruct``) or hub id."""
    stem = name.split("/")[-1].lower()
    path = resources.files(__name__) / f"{stem}.json"
    if not path.is_file():
        raise KeyError(f"no model config {name!r}; available: {available()}")
    return json.loads(path.read_text())


def hf_config(name: str):
    """The HF config object (``AutoConfig``-equivalent) for a checkpoint, built offline."""
    from transformers import AutoConfig

    data = {k: v for k, v in load(name).items() if not k.startswith("_")}
    return AutoConfig.for_model(data.pop("model_type"), **data)
