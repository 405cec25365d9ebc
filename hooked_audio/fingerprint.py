"""A short fingerprint of a model's weights and configuration, so that files written by one model (evaluation
results, activation stores) are not resumed by another that shares its name and shapes (a fine-tune, the textual
sibling, another dtype, another norm epsilon or rotary base)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import torch

FINGERPRINT_SAMPLES = 256  # values read from each weight tensor
# config fields that do not change what the model computes: where it runs, what it is called, and
# TransformerLens's switches for which extra hooks are computed
UNHASHED_CONFIG_FIELDS = ("device", "dtype", "model_name", "use_attn_result", "use_split_qkv_input",
                          "use_hook_mlp_in", "use_attn_in", "positional_embedding_type")


def model_fingerprint(model) -> str:
    """A short hash of the model's configuration (every field that changes the computation, e.g. norm epsilon,
    rotary base, the encoder's and projector's settings) and of its weights as stored: each state-dict tensor's
    name, shape, dtype and a fixed sample of its values (exact bytes, no sums, so the same on every device).
    Another checkpoint, a fine-tune, another dtype or another config gives another fingerprint; an edit of a few
    single weights may fall between the samples (give such a model its own ``model_name``)."""
    digest = hashlib.sha256()
    config = {k: v for k, v in _described(model.cfg).items() if k not in UNHASHED_CONFIG_FIELDS}
    digest.update(json.dumps(config, sort_keys=True, default=repr).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        n = flat.numel()
        if n > FINGERPRINT_SAMPLES:
            flat = flat[torch.arange(FINGERPRINT_SAMPLES, device=flat.device) * (n - 1) // (FINGERPRINT_SAMPLES - 1)]
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(flat.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


def _described(value):
    """A config as plain data, each part named by its class (an average pooling and a frame stacking of the same
    size, or a linear and an MLP projector, differ)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"class": type(value).__name__} | {f.name: _described(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_described(v) for v in value]
    return value
