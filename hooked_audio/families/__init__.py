"""Registry of supported HF model families, keyed by HF ``config.model_type``.

A family outside the package (see ``tutorials/07_add_a_family.py``) joins with ``register_family``.
"""

from __future__ import annotations

from .audioflamingo3 import AUDIOFLAMINGO3
from .base import ModelFamily
from .glm_asr import GLM_ASR
from .music_flamingo import MUSIC_FLAMINGO
from .qwen2_5_omni import QWEN2_5_OMNI
from .qwen2_audio import QWEN2_AUDIO
from .qwen3_omni import QWEN3_OMNI
from .voxtral import VOXTRAL

FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in [QWEN2_AUDIO, AUDIOFLAMINGO3, MUSIC_FLAMINGO, QWEN2_5_OMNI, QWEN3_OMNI, VOXTRAL, GLM_ASR]
}


SHIPPED = frozenset(FAMILIES)


def register_family(family: ModelFamily, replace: bool = False) -> None:
    """Make ``from_hf_model`` / ``from_pretrained`` load models whose ``config.model_type`` is one of
    ``family.hf_model_types``. Registering a family of the same name again replaces it (re-running a notebook
    cell), except a shipped family, which is replaced only with ``replace=True``."""
    if family.name in SHIPPED and FAMILIES[family.name] is not family and not replace:
        raise ValueError(
            f"{family.name!r} is a family this library ships; pick another name, or pass replace=True to override it"
        )
    for other in FAMILIES.values():
        clash = set(other.hf_model_types) & set(family.hf_model_types)
        if other.name != family.name and clash:
            raise ValueError(f"model types {sorted(clash)} are already loaded by the {other.name!r} family")
    FAMILIES[family.name] = family


def family_for_model_type(model_type: str) -> ModelFamily:
    for family in FAMILIES.values():
        if model_type in family.hf_model_types:
            return family
    supported = sorted(t for f in FAMILIES.values() for t in f.hf_model_types)
    raise ValueError(f"HF model_type {model_type!r} is not supported; supported model types: {supported}")
