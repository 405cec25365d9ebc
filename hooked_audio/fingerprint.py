"""A short fingerprint of a model's weights, so that files written by one model (evaluation results, activation
stores) are not resumed by another that shares its name and shapes (a fine-tune, the textual sibling, another
dtype)."""

from __future__ import annotations

import hashlib

import torch

FINGERPRINT_SAMPLES = 256  # values read from each weight tensor


def model_fingerprint(model) -> str:
    """A short hash of the model's weights as stored: each state-dict tensor's name, shape, dtype and a fixed
    sample of its values (exact bytes, no sums, so the same on every device). Another checkpoint, a fine-tune or
    another dtype gives another fingerprint; an edit of a few single weights may fall between the samples (give
    such a model its own ``model_name``)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        n = flat.numel()
        if n > FINGERPRINT_SAMPLES:
            flat = flat[torch.arange(FINGERPRINT_SAMPLES, device=flat.device) * (n - 1) // (FINGERPRINT_SAMPLES - 1)]
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(flat.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]
