"""``AudioActivationCache``: TransformerLens's ``ActivationCache`` that also knows where the audio is.

Everything ``ActivationCache`` does works unchanged (``cache["pattern", 3]``, ``accumulated_resid``,
``decompose_resid``, ``stack_head_results``, ``logit_attrs``, patching); ``cache.inputs`` is the
``AudioTextInput`` of the run, so audio spans and a time axis are always at hand.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from transformer_lens import ActivationCache

from .audio.inputs import AudioSpan, AudioTextInput


class AudioActivationCache(ActivationCache):
    def __init__(self, cache_dict: dict[str, torch.Tensor], model, inputs: AudioTextInput, has_batch_dim: bool = True):
        super().__init__(cache_dict, model, has_batch_dim=has_batch_dim)
        self.inputs = inputs

    @property
    def audio_spans(self) -> list[list[AudioSpan]]:
        return self.inputs.audio_spans

    @property
    def audio_positions(self) -> list[Int[torch.Tensor, "n_audio"]]:
        return self.inputs.audio_positions

    @property
    def last_positions(self) -> Int[torch.Tensor, "batch"]:
        return self.inputs.last_positions

    def token_times(self) -> Float[torch.Tensor, "batch pos 2"]:
        return self.inputs.token_times()

    def __repr__(self) -> str:
        n_audio = [len(p) for p in self.audio_positions]
        return f"AudioActivationCache({len(self.cache_dict)} activations, audio tokens per row {n_audio})"
