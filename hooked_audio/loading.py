"""Loading: ``from_hf_model`` (an HF model in memory) and ``from_pretrained`` (a name or directory).

Names resolve in this order: a bundled model name (``toy-qwen2-audio``), a local directory written by
HF ``save_pretrained``, a hub id already in the local HF cache, and only then a download (which fails
with a clear message where there is no network).
"""

from __future__ import annotations

import copy

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .families import family_for_model_type
from .model import HookedAudioTransformer
from .weight_processing import HF_STORAGES_ATTR, check_options, mark_shared_with_hf, process_weights

BUNDLED_MODELS = {"toy-qwen2-audio": Path(__file__).parent / "toy" / "checkpoint",
                  "toy-qwen2-audio-textual": Path(__file__).parent / "toy" / "checkpoint_textual",
                  "toy-voxtral": Path(__file__).parent / "toy" / "checkpoint_voxtral"}


def from_hf_model(
    hf_model: nn.Module,
    processor: Any = None,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    copy_weights: bool = True,
    fold_ln: bool = False,
    fold_value_biases: bool = False,
    center_unembed: bool = False,
    center_writing_weights: bool = False,
) -> HookedAudioTransformer:
    """Re-implement ``hf_model`` (of a full Omni model, its ``thinker``: the audio + text part). Weights are copied (``copy_weights=False`` shares them, saving memory
    when the HF model is thrown away); the HF model itself is never modified. The default keeps raw HF
    weights, so every activation is HF's (direct logit attribution is exact all the same); ``fold_ln``,
    ``fold_value_biases`` and ``center_unembed`` apply TransformerLens's weight processing
    (``weight_processing``)."""
    processing = dict(fold_ln=fold_ln, fold_value_biases=fold_value_biases, center_unembed=center_unembed,
                      center_writing_weights=center_writing_weights)
    check_options(**processing)  # before any work: a wrong type or an inexact option is refused first
    generation_config = getattr(hf_model, "generation_config", None)  # what HF's generate stops on and pads with
    thinker = getattr(hf_model, "thinker", None)
    if isinstance(thinker, nn.Module) and hasattr(thinker, "config"):  # a full Omni model: its audio + text part
        hf_model = thinker
    family = family_for_model_type(hf_model.config.model_type)
    cfg = family.to_config(hf_model.config)
    check_tying(hf_model, cfg.tie_word_embeddings, family.name)
    cfg.model_name = getattr(hf_model.config, "_name_or_path", "") or "custom"
    generation_eos = getattr(generation_config, "eos_token_id", None)
    if generation_eos is not None:
        cfg.eos_token_ids = tuple(generation_eos if isinstance(generation_eos, (list, tuple)) else [generation_eos])
    if getattr(generation_config, "pad_token_id", None) is not None:
        cfg.pad_token_id = int(generation_config.pad_token_id)
    elif generation_config is not None and cfg.eos_token_ids:  # HF's generate then pads with the first stop token
        cfg.pad_token_id = int(cfg.eos_token_ids[0])
    state_dict = family.state_dict_from_hf(hf_model.state_dict())
    if copy_weights:
        state_dict = {k: v.detach().clone() for k, v in state_dict.items()}
    with torch.device("meta"):
        model = HookedAudioTransformer(cfg, processor=processor, tokenizer=tokenizer)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.generation_config = copy.deepcopy(generation_config)
    model.hf_dropout = dropout_settings(hf_model.config)  # inert in eval mode; train() says it is never applied
    if cfg.tie_word_embeddings:
        model.unembed.weight = model.embed.weight
    if not copy_weights:  # a later process_weights_ would write to the HF model's own tensors: it is refused
        mark_shared_with_hf(model, hf_model)
    if any(processing.values()):
        if not copy_weights:  # processing writes to the weights, which would otherwise be the HF model's
            raise ValueError("weight processing (fold_ln, fold_value_biases, center_unembed) needs copy_weights=True")
        process_weights(model, fold_ln, center_writing_weights, center_unembed, fold_value_biases)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    cfg.device = str(model.device)
    cfg.dtype = model.W_E.dtype
    return model.eval()


def resolve_checkpoint(name_or_path: str | os.PathLike) -> str:
    """A local directory for ``name_or_path``, or a clear error saying how to make one."""
    if str(name_or_path) in BUNDLED_MODELS:
        path = BUNDLED_MODELS[str(name_or_path)]
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"the bundled checkpoint {name_or_path!r} is missing from {path}")
        return str(path)
    if os.path.isdir(name_or_path):
        return str(name_or_path)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(str(name_or_path), local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError):  # not in the local cache, or not a valid hub id
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            return snapshot_download(str(name_or_path))
        except (OSError, ValueError) as error:  # no network, unknown repo, gated model (all OSError subclasses)
            reason = f"download failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    raise OSError(
        f"Cannot load {str(name_or_path)!r}: it is not a bundled model ({sorted(BUNDLED_MODELS)}), not a local "
        f"directory, and not in the local Hugging Face cache ({reason}). On a machine with network, run "
        f"`HFModel.from_pretrained({str(name_or_path)!r}).save_pretrained(DIR)` (and the same for its processor), "
        "copy DIR here and pass its path."
    )


def from_pretrained(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    processor: Any = "auto",
    fold_ln: bool = False,
    fold_value_biases: bool = False,
    center_unembed: bool = False,
    center_writing_weights: bool = False,
) -> HookedAudioTransformer:
    """Load a supported HF checkpoint into a ``HookedAudioTransformer`` (offline when it is local); the weight
    processing options are ``from_hf_model``'s."""
    processing = dict(fold_ln=fold_ln, fold_value_biases=fold_value_biases, center_unembed=center_unembed,
                      center_writing_weights=center_writing_weights)
    check_options(**processing)  # before loading anything
    import json

    path = resolve_checkpoint(name_or_path)
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} has no config.json: it is not a checkpoint saved by HF save_pretrained")
    family = family_for_model_type(json.loads(config_file.read_text()).get("model_type", "<missing model_type>"))
    hf_class = family.model_class()
    hf_model, loading_info = hf_class.from_pretrained(path, dtype=dtype or torch.float32, output_loading_info=True)
    check_loading_info(loading_info, path, family.ignored_hf_keys)
    tokenizer = None
    if processor == "auto":
        processor, tokenizer = load_processor(path)
    model = from_hf_model(
        hf_model, processor=processor, tokenizer=tokenizer, device=device, copy_weights=any(processing.values()),
        **processing,
    )
    model.cfg.model_name = str(name_or_path)
    if hasattr(model, HF_STORAGES_ATTR):  # the HF model was ours and is gone: processing later is safe
        delattr(model, HF_STORAGES_ATTR)
    return model


def load_processor(path: str) -> tuple[Any, Any]:
    """``(processor, tokenizer)`` of a checkpoint: the processor when it has one (its tokenizer comes
    with it), else only a tokenizer, else neither (inputs must then be built by hand)."""
    from transformers import AutoProcessor, AutoTokenizer

    files = set(os.listdir(path))
    if files & {"processor_config.json", "preprocessor_config.json"}:
        processor = AutoProcessor.from_pretrained(path)
        if hasattr(processor, "feature_extractor"):
            return processor, processor.tokenizer
    if files & {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json"}:
        return None, AutoTokenizer.from_pretrained(path)
    return None, None


def check_loading_info(loading_info: dict, path: str, ignored: tuple[str, ...]) -> None:
    """Refuse a checkpoint whose weights do not fit the model: HF would fill missing ones with random values
    and drop unexpected ones, saying so only in a log line."""
    import re

    missing = sorted(loading_info.get("missing_keys", []))
    unexpected = sorted(k for k in loading_info.get("unexpected_keys", []) if not any(re.fullmatch(p, k) for p in ignored))
    mismatched = sorted(str(k) for k in loading_info.get("mismatched_keys", []))
    if missing or unexpected or mismatched:
        raise ValueError(
            f"the checkpoint in {path} does not fit its config: missing weights {missing[:5]}, unexpected weights "
            f"{unexpected[:5]}, wrong shapes {mismatched[:5]} ({len(missing)}, {len(unexpected)}, {len(mismatched)} in "
            "all). A missing weight would be random: re-save the checkpoint with HF `save_pretrained`."
        )


def dropout_settings(config) -> dict[str, float]:
    """The HF config's non-zero dropout probabilities (sub-configs too), by dotted name."""
    found: dict[str, float] = {}

    def walk(part: dict, prefix: str) -> None:
        for key, value in part.items():
            key = str(key)
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif ("dropout" in key or key.endswith("layerdrop")) and isinstance(value, (int, float)) \
                    and not isinstance(value, bool) and value > 0:
                found[prefix + key] = float(value)

    walk(config.to_dict(), "")
    return found


def check_tying(hf_model: nn.Module, tie_word_embeddings: bool, family: str) -> None:
    """The family's reading of the config agrees with what HF actually did to the model."""
    output, input = hf_model.get_output_embeddings(), hf_model.get_input_embeddings()
    hf_ties = output is not None and output.weight is input.weight
    if hf_ties != tie_word_embeddings:
        raise NotImplementedError(
            f"{family}: HF {'ties' if hf_ties else 'does not tie'} lm_head to the input embeddings but the family's "
            "config mapping says otherwise; this is a bug in the family (please report it)"
        )
