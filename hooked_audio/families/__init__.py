"""Registry of supported HF model families, keyed by HF ``config.model_type``."""

from __future__ import annotations

from .base import ModelFamily
from .qwen2_audio import QWEN2_AUDIO

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in [QWEN2_AUDIO]}


def family_for_model_type(model_type: str) -> ModelFamily:
    for family in FAMILIES.values():
        if model_type in family.hf_model_types:
            return family
    supported = sorted(t for f in FAMILIES.values() for t in f.hf_model_types)
    raise ValueError(f"HF model_type {model_type!r} is not supported; supported model types: {supported}")
